// Text classifier page: as the user types (debounced), POST /trace and redraw the tokens, each
// coloured by the chosen unit's gate, with the prediction had the text ended there.
"use strict";
(function () {
  var NAMES = { c: "cell state c", h: "hidden state h", f: "forget gate f", i: "input gate i",
                o: "output gate o", g: "candidate g", z: "update gate z", r: "reset gate r",
                n: "candidate n" };
  var ORDER = ["c", "h", "f", "i", "o", "g", "z", "r", "n"];
  var el = function (id) { return document.getElementById(id); };
  var runs = [], data = null, seq = 0, controller = null, hovered = null;

  function current() {
    var name = el("run").value;
    return runs.filter(function (r) { return r.name === name; })[0];
  }

  function fillNumbers(select, count, label) {
    var old = select.value;
    select.innerHTML = "";
    for (var k = 0; k < count; k++) {
      var o = document.createElement("option");
      o.value = String(k); o.textContent = label(k);
      select.appendChild(o);
    }
    if (old && Number(old) < count) { select.value = old; }
    select.parentNode.classList.toggle("hidden", count < 2);
  }

  function chooseRun() {
    var run = current();
    if (!run) { return; }
    fillNumbers(el("layer"), run.layers, function (k) { return "layer " + k; });
    fillNumbers(el("direction"), run.directions, function (k) {
      return k === 0 ? "forwards" : "backwards";
    });
    request();
  }

  function request() {
    var run = current(), text = el("text").value;
    if (!run) { return; }
    if (!text.trim()) {
      data = null; el("tokens").innerHTML = ""; el("prediction").textContent = "";
      el("error").textContent = ""; return;
    }
    var mine = ++seq;
    if (controller) { controller.abort(); }
    controller = new AbortController();
    var body = { text: text, layer: Number(el("layer").value || 0),
                 direction: Number(el("direction").value || 0) };
    rnnlab.api("/api/runs/" + encodeURIComponent(run.name) + "/trace", body, controller.signal)
      .then(function (result) {
        if (mine !== seq) { return; }
        data = result; el("error").textContent = ""; render();
      })
      .catch(function (e) {
        if (mine !== seq || e.name === "AbortError") { return; }
        el("error").textContent = e.message;
      });
  }

  function render() {
    var gates = Object.keys(data.gates);
    var mode = el("mode"), unit = el("unit"), oldMode = mode.value, oldUnit = unit.value;
    mode.innerHTML = "";
    ORDER.filter(function (g) { return gates.indexOf(g) >= 0; }).forEach(function (g) {
      var o = document.createElement("option");
      o.value = g; o.textContent = NAMES[g]; mode.appendChild(o);
    });
    if (gates.indexOf(oldMode) >= 0) { mode.value = oldMode; }
    unit.innerHTML = "";
    data.top_units.forEach(function (u) {
      var o = document.createElement("option");
      o.value = String(u); o.textContent = "unit " + u + " (activity " + data.activity[u].toFixed(3) + ")";
      unit.appendChild(o);
    });
    unit.value = oldUnit && Number(oldUnit) < data.activity.length ? oldUnit : String(data.top_units[0]);

    var shown = data.classes.length === 2 ? 1 : data.label;
    var pred = el("prediction");
    pred.innerHTML = "";
    var b = document.createElement("b");
    b.id = "label"; b.textContent = data.label_name;
    pred.appendChild(document.createTextNode("Prediction: "));
    pred.appendChild(b);
    pred.appendChild(document.createTextNode(" (" + data.probability.toFixed(3) + ") after " +
      data.steps.length + " tokens "));
    var bar = document.createElement("span");
    bar.className = "bar" + (data.label === shown ? "" : " neg");
    bar.style.width = (data.probability * 12).toFixed(2) + "em";
    pred.appendChild(bar);

    var box = el("tokens");
    box.innerHTML = "";
    data.steps.forEach(function (word, k) {
      var tok = document.createElement("span"), w = document.createElement("span"),
          p = document.createElement("span"), probs = data.step_probabilities[k];
      tok.className = "tok" + (data.oov && data.oov[k] ? " oov" : "");
      tok.setAttribute("data-i", String(k));
      w.className = "w"; w.textContent = word;
      p.className = "p";
      var best = probs.indexOf(Math.max.apply(null, probs));
      p.textContent = probs[shown].toFixed(2) + (best === shown ? "" : "*");
      tok.title = "after " + JSON.stringify(word) + ": " + data.classes.map(function (c, j) {
        return c + " " + probs[j].toFixed(3);
      }).join(", ");
      tok.appendChild(w); tok.appendChild(p); box.appendChild(tok);
    });
    el("act-name").textContent = data.gates.c ? "cell state" : "hidden state";
    paint();
    if (hovered !== null && hovered < data.steps.length) { showGates(hovered); }
  }

  function paint() {
    if (!data) { return; }
    var gate = el("mode").value, u = Number(el("unit").value), values = data.gates[gate];
    var scale = rnnlab.SIGMOID[gate] ? null : rnnlab.scales(values);
    document.querySelectorAll("#tokens .tok").forEach(function (tok, k) {
      var v = values[k][u];
      tok.querySelector(".w").style.background = rnnlab.colour(scale ? v / scale[u] : v, gate);
      tok.setAttribute("data-value", v.toFixed(4));
    });
    var buttons = el("top-units");
    buttons.innerHTML = "";
    data.top_units.slice(0, 10).forEach(function (unit) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = unit + " (" + data.activity[unit].toFixed(2) + ")";
      button.className = unit === u ? "chosen" : "";
      button.addEventListener("click", function () { el("unit").value = String(unit); paint(); });
      buttons.appendChild(button);
    });
  }

  // The gates of step k: the chosen unit, then the most active ones, then the mean of all.
  function showGates(k) {
    hovered = k;
    var gates = ORDER.filter(function (g) { return data.gates[g]; });
    var u = Number(el("unit").value);
    var units = [u].concat(data.top_units.filter(function (x) { return x !== u; }).slice(0, 7));
    el("hover-word").textContent = JSON.stringify(data.steps[k]) + " (token " + (k + 1) + ")";
    var table = el("hover-table");
    table.innerHTML = "";
    var head = document.createElement("tr");
    ["unit"].concat(gates).forEach(function (g) {
      var th = document.createElement("th"); th.textContent = g; head.appendChild(th);
    });
    table.appendChild(head);
    function row(label, value, chosen) {
      var tr = document.createElement("tr");
      if (chosen) { tr.className = "chosen"; }
      var td = document.createElement("td"); td.textContent = label; tr.appendChild(td);
      gates.forEach(function (g) {
        var cell = document.createElement("td"), v = value(g);
        cell.textContent = v.toFixed(3);
        cell.style.background = rnnlab.colour(v, g);  // c beyond [-1, 1] is drawn full
        tr.appendChild(cell);
      });
      table.appendChild(tr);
    }
    units.forEach(function (unit) {
      row(String(unit), function (g) { return data.gates[g][k][unit]; }, unit === u);
    });
    row("mean", function (g) {
      var values = data.gates[g][k];
      return values.reduce(function (a, b) { return a + b; }, 0) / values.length;
    }, false);
  }

  el("tokens").addEventListener("mouseover", function (event) {
    var tok = event.target.closest(".tok");
    if (!tok || !data) { return; }
    document.querySelectorAll("#tokens .tok.hover").forEach(function (t) { t.classList.remove("hover"); });
    tok.classList.add("hover");
    showGates(Number(tok.getAttribute("data-i")));
  });
  el("text").addEventListener("input", rnnlab.debounce(request, 250));
  el("run").addEventListener("change", chooseRun);
  el("layer").addEventListener("change", request);
  el("direction").addEventListener("change", request);
  el("mode").addEventListener("change", paint);
  el("unit").addEventListener("change", function () {
    paint(); if (hovered !== null) { showGates(hovered); }
  });

  rnnlab.start("text").then(function (all) {
    runs = rnnlab.runPicker(el("run"), all, "text");
    if (!runs.length) { el("error").textContent = "No text-classifier run is served."; return; }
    chooseRun();
  }).catch(function (e) { el("error").textContent = e.message; });
})();
