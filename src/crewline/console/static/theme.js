// Runs before the page paints, so a chosen theme never flashes the other one first.
(function () {
  var theme = null;
  try { theme = localStorage.getItem("crewline-theme"); } catch (e) { /* storage blocked */ }
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
})();
