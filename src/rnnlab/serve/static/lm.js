// Language-model page: POST /generate and read its server-sent events as they stream in; each
// token is coloured by the chosen unit's c or h after it (every unit's value comes with each
// token, so the picker recolours without generating again), its top-5 alternatives on hover.
// Shown only when a language-model run is served.
"use strict";
(function () {
  var el = function (id) { return document.getElementById(id); };
  var SHOWN = { " ": "\u2423", "\n": "\u21b5\n", "\t": "\u21e5" };
  var runs = [], tokens = [], controller = null, lastSeed = 0;

  function shown(text) {
    return text.split("").map(function (ch) { return SHOWN[ch] || ch; }).join("");
  }
  function run() {
    return runs.filter(function (r) { return r.name === el("run").value; })[0];
  }
  function option(select, value, text) {
    var o = document.createElement("option");
    o.value = String(value); o.textContent = text; select.appendChild(o);
  }

  // Layer, state and unit pickers for the chosen run.
  function pickers() {
    var r = run();
    el("layer").innerHTML = ""; el("state").innerHTML = ""; el("unit").innerHTML = "";
    for (var l = 0; l < r.layers; l++) { option(el("layer"), l, String(l)); }
    el("layer-box").classList.toggle("hidden", r.layers < 2);
    if (r.cell === "lstm") { option(el("state"), "c", "cell state c"); }
    option(el("state"), "h", "hidden state h");
    units();
  }
  function units() {
    var H = run().hidden_sizes[Number(el("layer").value)], chosen = el("unit").value;
    el("unit").innerHTML = "";
    for (var u = 0; u < H; u++) { option(el("unit"), u, "unit " + u); }
    if (chosen !== "" && Number(chosen) < H) { el("unit").value = chosen; }
  }

  var scale = 1e-6;  // the chosen unit's largest |value| so far
  function paint(span, item) {
    var v = item.values[Number(el("unit").value)];
    span.style.background = rnnlab.colour(v / scale, "c");
    span.setAttribute("data-value", v.toFixed(4));
  }
  function colourAll() {
    var u = Number(el("unit").value);
    scale = 1e-6;
    tokens.forEach(function (t) { scale = Math.max(scale, Math.abs(t.values[u])); });
    document.querySelectorAll("#stream .tok").forEach(function (span, k) {
      paint(span, tokens[k]);
    });
  }

  function add(item) {
    var span = document.createElement("span");
    span.className = "tok gen";
    span.setAttribute("data-i", String(tokens.length));
    span.textContent = shown(item.token);
    span.title = "p = " + item.probability.toFixed(3);
    tokens.push(item);
    el("stream").appendChild(span);
    var v = Math.abs(item.values[Number(el("unit").value)]);
    if (v > scale) { colourAll(); } else { paint(span, item); }  // a new largest rescales all
    var mean = tokens.reduce(function (s, t) { return s + Math.log(t.probability); }, 0);
    el("status").textContent = tokens.length + " tokens generated; mean probability of the " +
      "drawn token " + Math.exp(mean / tokens.length).toFixed(3) + " (geometric)";
  }

  function showAlternatives(k) {
    var item = tokens[k], box = el("alternatives");
    el("hover-token").textContent = JSON.stringify(item.token) + " (token " + (k + 1) + ")";
    box.innerHTML = "";
    item.top.forEach(function (alt) {
      var row = document.createElement("div"), bar = document.createElement("span");
      row.className = "alt" + (alt.token === item.token ? " best" : "");
      bar.className = "bar";
      bar.style.width = (alt.probability * 8).toFixed(2) + "em";
      row.appendChild(document.createTextNode(JSON.stringify(alt.token).padEnd(8) + " " +
        alt.probability.toFixed(3) + " "));
      row.appendChild(bar);
      box.appendChild(row);
    });
    var drawn = document.createElement("div");
    drawn.className = "hint";
    drawn.textContent = "drawn: " + JSON.stringify(item.token) + ", p = " +
      item.probability.toFixed(3) + "; " + el("state").value + " of unit " + el("unit").value +
      " = " + item.values[Number(el("unit").value)].toFixed(3);
    box.appendChild(drawn);
  }

  // Split the byte stream into SSE events ("event: NAME\ndata: JSON\n\n").
  function readEvents(response, onEvent) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) { return; }
        buffer += decoder.decode(chunk.value, { stream: true });
        var events = buffer.split("\n\n");
        buffer = events.pop();
        events.forEach(function (text) {
          var name = "message", data = "";
          text.split("\n").forEach(function (line) {
            if (line.indexOf("event: ") === 0) { name = line.slice(7); }
            if (line.indexOf("data: ") === 0) { data += line.slice(6); }
          });
          onEvent(name, data ? JSON.parse(data) : null);
        });
        return pump();
      });
    }
    return pump();
  }

  function finished(text) {
    controller = null;
    el("go").disabled = false; el("stop").disabled = true;
    if (text) { el("status").textContent += " \u2014 " + text; }
  }

  // again: the same seed as last time (a new layer or state recolours the same text).
  function generate(again) {
    if (controller) { controller.abort(); }
    controller = new AbortController();
    var mine = controller;
    tokens = []; scale = 1e-6;
    el("stream").innerHTML = ""; el("error").textContent = ""; el("status").textContent = "";
    el("alternatives").innerHTML = "";
    var prompt = document.createElement("span");
    prompt.className = "prompt"; prompt.textContent = el("prompt").value;
    el("stream").appendChild(prompt);
    var body = {
      prompt: el("prompt").value, temperature: Number(el("temperature").value),
      top_k: Number(el("top-k").value) || null, max_tokens: Number(el("max-tokens").value),
      layer: Number(el("layer").value), state: el("state").value,
      unit: Number(el("unit").value), every_unit: true,
    };
    if (again !== true) {
      lastSeed = el("seed").value !== "" ? Number(el("seed").value) :
        Math.floor(Math.random() * 2147483647);
    }
    body.seed = lastSeed;
    el("go").disabled = true; el("stop").disabled = false;
    fetch("/api/runs/" + encodeURIComponent(el("run").value) + "/generate", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body), signal: mine.signal,
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (data) {
          throw new Error(rnnlab.describeError(response.status, data));
        });
      }
      return readEvents(response, function (name, data) {
        if (controller !== mine) { return; }
        if (name === "token") { add(data); }
        if (name === "error") { el("error").textContent = data.detail; }
        if (name === "done") { finished("done"); }
      });
    }).catch(function (e) {
      if (e.name === "AbortError") { return; }
      el("error").textContent = e.message;
      if (controller === mine) { finished(""); }
    });
  }

  rnnlab.start("lm").then(function (all) {
    runs = rnnlab.runPicker(el("run"), all, "lm");
    el("none").classList.toggle("hidden", runs.length > 0);
    el("lm-ui").classList.toggle("hidden", runs.length === 0);
    if (!runs.length) { return; }
    pickers();
    el("run").addEventListener("change", pickers);
    el("layer").addEventListener("change", function () {
      units(); if (tokens.length) { generate(true); }
    });
    el("state").addEventListener("change", function () {
      if (tokens.length) { generate(true); }
    });
    el("unit").addEventListener("change", function () { if (tokens.length) { colourAll(); } });
    el("go").addEventListener("click", function () { generate(false); });
    el("stop").addEventListener("click", function () {
      if (controller) { controller.abort(); finished("stopped"); }
    });
    el("stream").addEventListener("mouseover", function (event) {
      var tok = event.target.closest(".tok");
      if (!tok) { return; }
      document.querySelectorAll("#stream .tok.hover").forEach(function (t) {
        t.classList.remove("hover");
      });
      tok.classList.add("hover");
      showAlternatives(Number(tok.getAttribute("data-i")));
    });
  }).catch(function (e) { el("none").textContent = e.message; });
})();
