// Runs page: each served run's status, report, configuration and learning curve, polled from
// /api/runs/RUN and /api/runs/RUN/metrics while the run is still training.
"use strict";
(function () {
  var POLL_MS = 2000;
  var REPORT_KEYS = ["test_accuracy", "test_loss", "best_val_accuracy", "best_epoch", "epochs",
                     "steps", "parameters", "train_seconds", "samples_per_second"];

  function card(run) {
    var div = document.createElement("div");
    div.className = "card"; div.id = "run-" + run.index;
    div.innerHTML = "<h2></h2><p class='meta'></p><div class='layout'>" +
      "<canvas class='curve' width='640' height='240'></canvas><div><table class='report'>" +
      "</table><details><summary>configuration</summary><pre></pre></details></div></div>";
    div.querySelector("h2").textContent = "[" + run.index + "] " + run.name + " ";
    var status = document.createElement("span");
    status.className = "status"; div.querySelector("h2").appendChild(status);
    document.getElementById("cards").appendChild(div);
    return { run: run, div: div, status: status, records: [], next: 0 };
  }

  function refresh(state) {
    var key = encodeURIComponent(state.run.name);
    return Promise.all([
      rnnlab.api("/api/runs/" + key),
      rnnlab.api("/api/runs/" + key + "/metrics?after=" + state.next),
    ]).then(function (answers) {
      var info = answers[0], metrics = answers[1];
      if (metrics.reset) { state.records = []; }
      state.records = state.records.concat(metrics.records);
      state.next = metrics.next;
      state.status.textContent = info.status;
      state.status.className = "status " + info.status;
      state.div.querySelector(".meta").textContent = info.title + ", " +
        info.cell.toUpperCase() + " " + info.hidden_sizes.join("/") + " units; serving checkpoint " +
        info.checkpoint + " (step " + info.step + "); " + state.records.length + " metric records";
      state.div.querySelector("pre").textContent = JSON.stringify(info.config, null, 1);
      var table = state.div.querySelector("table");
      table.innerHTML = "";
      REPORT_KEYS.forEach(function (k) {
        if (!info.report || info.report[k] === undefined) { return; }
        var tr = document.createElement("tr"), a = document.createElement("td"),
            b = document.createElement("td"), v = info.report[k];
        a.textContent = k; b.textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : v;
        tr.appendChild(a); tr.appendChild(b); table.appendChild(tr);
      });
      if (!info.report) {
        var tr = document.createElement("tr"), td = document.createElement("td");
        td.textContent = "no report yet (written when the run finishes)";
        tr.appendChild(td); table.appendChild(tr);
      }
      draw(state.div.querySelector("canvas"), state.records);
      if (info.status === "running") { setTimeout(function () { refresh(state); }, POLL_MS); }
    }).catch(function (e) { document.getElementById("error").textContent = e.message; });
  }

  // Loss (left axis, red) and accuracy (right axis 0..1, blue) against the step; epoch records
  // with validation numbers are drawn as dots.
  function draw(canvas, records) {
    var c = canvas.getContext("2d"), W = canvas.width, H = canvas.height, m = 40;
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, H);
    c.strokeStyle = "#888"; c.strokeRect(m, 10, W - 2 * m, H - m - 10);
    var steps = records.filter(function (r) { return r.kind === "step"; });
    var epochs = records.filter(function (r) { return r.kind === "epoch"; });
    c.fillStyle = "#333"; c.font = "12px sans-serif";
    if (!steps.length && !epochs.length) { c.fillText("no metrics yet", W / 2 - 40, H / 2); return; }
    var all = steps.concat(epochs), maxStep = Math.max.apply(null, all.map(function (r) { return r.step || 0; })) || 1;
    var losses = [];
    all.forEach(function (r) {
      [r.loss, r.val_loss].forEach(function (v) { if (typeof v === "number") { losses.push(v); } });
    });
    var maxLoss = Math.max.apply(null, losses.concat([1e-6]));
    var x = function (s) { return m + (W - 2 * m) * s / maxStep; };
    var yl = function (v) { return H - m - (H - m - 10) * v / maxLoss; };
    var ya = function (v) { return H - m - (H - m - 10) * v; };
    function line(key, y, colour) {
      c.strokeStyle = colour; c.lineWidth = 1.5; c.beginPath();
      steps.forEach(function (r, k) {
        if (typeof r[key] !== "number") { return; }
        if (k === 0) { c.moveTo(x(r.step), y(r[key])); } else { c.lineTo(x(r.step), y(r[key])); }
      });
      c.stroke();
    }
    line("loss", yl, "#d62728");
    line("accuracy", ya, "#1f77b4");
    epochs.forEach(function (r) {
      [["val_loss", yl, "#d62728"], ["val_accuracy", ya, "#1f77b4"]].forEach(function (s) {
        if (typeof r[s[0]] !== "number") { return; }
        c.fillStyle = s[2]; c.beginPath(); c.arc(x(r.step), s[1](r[s[0]]), 4, 0, 7); c.fill();
      });
    });
    c.fillStyle = "#333";
    c.fillText("step " + maxStep, W - m - 50, H - m + 15);
    c.fillText("0", m - 10, H - m + 15);
    c.fillStyle = "#d62728"; c.fillText(maxLoss.toFixed(2), 4, 20);
    c.fillStyle = "#1f77b4"; c.fillText("1.0", W - m + 6, 20); c.fillText("0.0", W - m + 6, H - m);
    c.fillStyle = "#d62728"; c.fillText("loss (max " + maxLoss.toFixed(2) + ")", m, H - 8);
    c.fillStyle = "#1f77b4"; c.fillText("accuracy (0..1); dots: validation", m + 160, H - 8);
  }

  rnnlab.start("runs").then(function (runs) {
    runs.forEach(function (run) { refresh(card(run)); });
  }).catch(function (e) { document.getElementById("error").textContent = e.message; });
})();
