// Language-model page: POST /generate and read its server-sent events as they stream in; each
// token is coloured by the chosen unit's value, its top-5 alternatives on hover. Shown only when
// a language-model run is served (none exists yet: issue 12).
"use strict";
(function () {
  var el = function (id) { return document.getElementById(id); };
  var controller = null;

  function token(item) {
    var span = document.createElement("span");
    span.className = "tok";
    span.textContent = item.token;
    if (typeof item.value === "number") {
      span.style.background = rnnlab.colour(Math.max(-1, Math.min(1, item.value)), "c");
    }
    if (item.top) {
      span.title = item.top.map(function (t) {
        return JSON.stringify(t.token) + " " + t.probability.toFixed(3);
      }).join("\n");
    }
    el("stream").appendChild(span);
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

  function generate() {
    if (controller) { controller.abort(); }
    controller = new AbortController();
    el("stream").innerHTML = ""; el("error").textContent = "";
    var body = {
      prompt: el("prompt").value, temperature: Number(el("temperature").value),
      top_k: Number(el("top-k").value), max_tokens: Number(el("max-tokens").value),
      unit: Number(el("unit").value),
    };
    fetch("/api/runs/" + encodeURIComponent(el("run").value) + "/generate", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (data) {
          throw new Error(JSON.stringify(data.detail));
        });
      }
      return readEvents(response, function (name, data) {
        if (name === "token") { token(data); }
        if (name === "error") { el("error").textContent = data.detail; }
      });
    }).catch(function (e) {
      if (e.name !== "AbortError") { el("error").textContent = e.message; }
    });
  }

  rnnlab.start("lm").then(function (all) {
    var runs = rnnlab.runPicker(el("run"), all, "lm");
    el("none").classList.toggle("hidden", runs.length > 0);
    el("lm-ui").classList.toggle("hidden", runs.length === 0);
    el("go").addEventListener("click", generate);
  }).catch(function (e) { el("none").textContent = e.message; });
})();
