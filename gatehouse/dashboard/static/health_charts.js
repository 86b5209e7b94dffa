/* The Health page's charts: the last hour from /_/health/data, drawn with uPlot (vendored beside
   this file). The page's figures and table carry the same numbers without script. */
(function () {
  "use strict";
  var holder = document.getElementById("charts");
  if (!holder || typeof uPlot === "undefined") { return; }
  var source = holder.getAttribute("data-source");
  var charts = [];

  function percent(list) {
    return list.map(function (v) { return v === null ? null : v * 100; });
  }

  var specs = [
    { id: "chart-rate", series: [{ key: "requests_per_second", label: "requests/s", stroke: "#1d4ed8" }] },
    { id: "chart-errors", series: [{ key: "error_rate", label: "5xx %", stroke: "#b91c1c", map: percent }] },
    { id: "chart-latency", series: [{ key: "p50_ms", label: "p50 ms", stroke: "#15803d" },
                                     { key: "p99_ms", label: "p99 ms", stroke: "#b45309" }] },
    { id: "chart-pool", series: [{ key: "pool_in_use", label: "in use", stroke: "#7c3aed" },
                                  { key: "pool_max", label: "most", stroke: "#71717a", dash: [6, 4] }] }
  ];

  function columns(spec, body) {
    var data = [body.series.time];
    spec.series.forEach(function (line) {
      var values = body.series[line.key] || [];
      data.push(line.map ? line.map(values) : values);
    });
    return data;
  }

  function width(element) {
    return Math.max(240, Math.floor(element.clientWidth || holder.clientWidth || 320));
  }

  function draw(body) {
    specs.forEach(function (spec, index) {
      var element = document.getElementById(spec.id);
      if (!element) { return; }
      var data = columns(spec, body);
      if (charts[index]) { charts[index].setData(data); return; }
      var series = [{}].concat(spec.series.map(function (line) {
        return { label: line.label, stroke: line.stroke, width: 2, dash: line.dash, spanGaps: false,
                 points: { show: true, size: 5 } };
      }));
      charts[index] = new uPlot({ width: width(element), height: 180, series: series,
                                  scales: { x: { time: true }, y: { range: function (u, min, max) {
                                    return [0, max > 0 ? max * 1.1 : 1]; } } },
                                  axes: [{}, { size: 56 }] }, data, element);
    });
  }

  function failed(message) {
    var box = document.getElementById("chart-error");
    if (box) { box.textContent = message; box.hidden = false; }
  }

  function load() {
    fetch(source, { credentials: "same-origin", headers: { "accept": "application/json" } })
      .then(function (response) {
        if (!response.ok || (response.headers.get("content-type") || "").indexOf("application/json") !== 0) {
          throw new Error("The chart data did not load (status " + response.status + "); the table below has the numbers.");
        }
        return response.json();
      })
      .then(function (body) {
        var box = document.getElementById("chart-error");
        if (box) { box.hidden = true; }
        draw(body);
      })
      .catch(function (error) { failed(error.message); });
  }

  window.addEventListener("resize", function () {
    specs.forEach(function (spec, index) {
      var element = document.getElementById(spec.id);
      if (charts[index] && element) { charts[index].setSize({ width: width(element), height: 180 }); }
    });
  });
  load();
  window.setInterval(load, 30000);
}());
