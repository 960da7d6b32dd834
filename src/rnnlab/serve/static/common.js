// rnnlab serve: helpers every page uses. No libraries: plain DOM and fetch.
"use strict";
var rnnlab = (function () {
  var POSITIVE = [214, 39, 40], NEGATIVE = [31, 119, 180], GATE = [44, 160, 44];
  var SIGMOID = { i: 1, f: 1, o: 1, r: 1, z: 1 };

  // GET or POST JSON; rejects with an Error whose message is the server's "detail".
  function api(path, body, signal) {
    var options = { method: body === undefined ? "GET" : "POST", signal: signal };
    if (body !== undefined) {
      options.headers = { "content-type": "application/json" };
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(describeError(response.status, data)); }
        return data;
      });
    });
  }

  function describeError(status, data) {
    var d = data && data.detail;
    if (Array.isArray(d)) {
      return d.map(function (e) { return (e.loc || []).slice(1).join(".") + ": " + e.msg; }).join("; ");
    }
    return status + ": " + (d || "error");
  }

  // f is called once the caller has been quiet for ms milliseconds.
  function debounce(f, ms) {
    var timer = null;
    return function () {
      var args = arguments;
      clearTimeout(timer);
      timer = setTimeout(function () { f.apply(null, args); }, ms);
    };
  }

  // The served runs, and the navigation bar (a kind's page link only when a run of it is served).
  function start(page) {
    return api("/api/runs").then(function (data) {
      var nav = document.querySelector("nav");
      nav.querySelectorAll("a[data-page]").forEach(function (a) {
        if (a.getAttribute("data-page") === page) { a.classList.add("here"); }
        var shown = a.getAttribute("data-page");
        var ofRuns = shown !== "index" && shown !== "runs";
        if (ofRuns && !data.runs.some(function (r) { return r.page === shown; })) {
          a.classList.add("hidden");
        }
      });
      return data.runs;
    });
  }

  // Fill a <select> with the runs this page shows; the URL's ?run= preselects one.
  function runPicker(select, runs, page) {
    var wanted = new URLSearchParams(location.search).get("run");
    var mine = runs.filter(function (r) { return r.page === page; });
    select.innerHTML = "";
    mine.forEach(function (r) {
      var option = document.createElement("option");
      option.value = r.name;
      option.textContent = r.name + " (" + r.cell.toUpperCase() + ", " +
        r.hidden_sizes.join("/") + " units)";
      if (r.name === wanted || String(r.index) === wanted) { option.selected = true; }
      select.appendChild(option);
    });
    return mine;
  }

  // CSS colour of a value: sigmoid gates green by a value in [0, 1]; others red (positive) or
  // blue (negative) by a value scaled to [-1, 1].
  function colour(value, gate) {
    if (value === null || value === undefined) { return "transparent"; }
    if (SIGMOID[gate]) { return "rgba(" + GATE.join(",") + "," + value.toFixed(3) + ")"; }
    var rgb = value >= 0 ? POSITIVE : NEGATIVE;
    return "rgba(" + rgb.join(",") + "," + Math.min(1, Math.abs(value)).toFixed(3) + ")";
  }

  // Per unit, the largest |value| of a gate over the steps: each unit uses its full range.
  function scales(values) {
    var H = values.length ? values[0].length : 0, out = new Array(H).fill(1e-6);
    values.forEach(function (row) {
      for (var u = 0; u < H; u++) { out[u] = Math.max(out[u], Math.abs(row[u])); }
    });
    return out;
  }

  // Draw a (rows x cols) matrix on a canvas, one cell per value, coloured by colour(v, gate).
  function heatmap(canvas, matrix, gate, scale) {
    var rows = matrix.length, cols = rows ? matrix[0].length : 0;
    canvas.width = cols; canvas.height = rows;
    var ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cols, rows);
    for (var t = 0; t < rows; t++) {
      for (var u = 0; u < cols; u++) {
        var v = matrix[t][u];
        ctx.fillStyle = colour(SIGMOID[gate] ? v : v / (scale ? scale[u] : 1), gate);
        ctx.fillRect(u, t, 1, 1);
      }
    }
  }

  return { api: api, describeError: describeError, debounce: debounce, start: start, runPicker: runPicker, colour: colour,
           scales: scales, heatmap: heatmap, SIGMOID: SIGMOID };
})();
