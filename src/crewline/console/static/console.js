// The console's own behaviour: theme and nav toggles, the CSRF header on htmx requests, select-all boxes.
(function () {
  "use strict";

  function csrf() { return document.body.dataset.csrf || ""; }

  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.verb !== "get") event.detail.headers["X-CSRF-Token"] = csrf();
  });

  function currentTheme() {
    var set = document.documentElement.dataset.theme;
    if (set) return set;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var toggle = target.closest(".theme-toggle");
    if (toggle) {
      var next = currentTheme() === "dark" ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      try { localStorage.setItem("crewline-theme", next); } catch (e) { /* storage blocked */ }
      document.dispatchEvent(new CustomEvent("crewline:theme"));
      return;
    }
    var navToggle = target.closest(".nav-toggle");
    if (navToggle) {
      var open = navToggle.getAttribute("aria-expanded") !== "true";
      navToggle.setAttribute("aria-expanded", String(open));
      document.getElementById("nav").classList.toggle("open", open);
    }
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
    document.querySelectorAll("input[name='" + box.dataset.selectAll + "']").forEach(function (other) {
      other.checked = box.checked;
    });
  });
})();
