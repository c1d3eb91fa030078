// Draws the overview's charts with uPlot from the JSON the page names in data-src (one fetch per URL).
(function () {
  "use strict";
  var palette = ["#4c8bf5", "#e8710a", "#1a7f37", "#b42318", "#8250df", "#0a7ea4", "#9a6700", "#cf222e"];

  function series(names) {
    return [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: palette[i % palette.length], width: 1.5, spanGaps: true };
    }));
  }

  function draw(el, data) {
    var kind = el.dataset.chart, names, rows;
    if (kind === "latency") {
      names = ["p50", "p95"];
      rows = [data.latency.p50, data.latency.p95];
    } else {
      names = Object.keys(data[kind]).sort();
      rows = names.map(function (n) { return data[kind][n]; });
    }
    if (!names.length) {
      el.textContent = "No model calls in the last 7 days.";
      return;
    }
    var width = Math.max(280, el.clientWidth || 320);
    el.textContent = "";
    new window.uPlot({ width: width, height: 200, series: series(names), scales: { x: { time: true } } },
      [data.hours].concat(rows), el);
  }

  function load() {
    var charts = document.querySelectorAll("[data-chart]");
    var fetched = {};
    charts.forEach(function (el) {
      var src = el.dataset.src;
      fetched[src] = fetched[src] || fetch(src, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error("charts: " + r.status);
        return r.json();
      });
      fetched[src].then(function (data) { draw(el, data); }).catch(function () {
        el.textContent = "The chart could not be loaded.";
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
  else load();
})();
