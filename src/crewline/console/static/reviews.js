// Keyboard shortcuts of the review queue: j/k move between reviews, a approves, e opens the edit form,
// r goes to the reject comment, ? shows the help. Keys typed into a form field are left alone.
(function () {
  "use strict";

  var current = null; // the data-review id of the selected review

  function reviews() { return Array.prototype.slice.call(document.querySelectorAll("[data-review]")); }

  function select(card) {
    if (!card) return;
    reviews().forEach(function (other) { other.classList.toggle("selected", other === card); });
    current = card.dataset.review;
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest" });
  }

  function selected() {
    var all = reviews();
    for (var i = 0; i < all.length; i++) if (all[i].dataset.review === current) return all[i];
    return null;
  }

  function move(step) {
    var all = reviews();
    if (!all.length) return;
    var at = all.indexOf(selected());
    select(all[at < 0 ? 0 : Math.min(all.length - 1, Math.max(0, at + step))]);
  }

  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function submit(form) {
    if (!form) return;
    if (typeof form.requestSubmit === "function") form.requestSubmit(); else form.submit();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (["j", "k", "a", "e", "r", "?"].indexOf(event.key) < 0) return;
    var help = document.getElementById("shortcuts");
    if (event.key === "?") {
      if (help && typeof help.showModal === "function" && !help.open) help.showModal();
      event.preventDefault();
      return;
    }
    if (!selected()) select(reviews()[0]);
    var card = selected();
    if (!card) return;
    if (event.key === "j") move(1);
    else if (event.key === "k") move(-1);
    else if (event.key === "a") submit(card.querySelector("form.approve"));
    else if (event.key === "e") {
      var edit = card.querySelector("details.edit");
      if (!edit) return;
      edit.open = true;
      var first = edit.querySelector("input:not([type=hidden]), textarea, select");
      if (first) first.focus();
    } else if (event.key === "r") {
      var why = card.querySelector("form.reject input[name=comment]");
      if (why) why.focus();
    }
    event.preventDefault();
  });

  // The queue is swapped when reviews come and go (server-sent events): keep the selection.
  document.addEventListener("htmx:afterSwap", function () {
    var card = selected();
    if (card) card.classList.add("selected");
  });
})();
