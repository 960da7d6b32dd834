// Translate page: POST /translate as the source is typed (debounced); the n-best outputs with
// their log-probabilities, and the attention matrix of the chosen one as a table of shaded
// cells (rows: output tokens and </s>; columns: source tokens). Shown only when a
// sequence-to-sequence run is served.
"use strict";
(function () {
  var el = function (id) { return document.getElementById(id); };
  var result = null, pending = null;

  function cell(tag, text, title) {
    var c = document.createElement(tag);
    c.textContent = text;
    if (title) { c.title = title; }
    return c;
  }

  function drawAttention(k) {
    var table = el("attention"), out = result.outputs[k];
    table.innerHTML = "";
    el("shown").textContent = out.text === "" ? "(empty)" : out.text;
    var head = document.createElement("tr");
    head.appendChild(cell("th", ""));
    result.source.forEach(function (t) { head.appendChild(cell("th", t === " " ? "\u2423" : t)); });
    table.appendChild(head);
    var rows = out.tokens.concat(out.finished ? ["</s>"] : []);
    out.attention.forEach(function (weights, r) {
      var tr = document.createElement("tr");
      tr.appendChild(cell("th", rows[r]));
      weights.forEach(function (w, s) {
        var td = cell("td", "", rows[r] + " <- " + result.source[s] + ": " + w.toFixed(3));
        td.className = "att";
        td.style.background = rnnlab.colour(w, "i");
        td.setAttribute("data-weight", w.toFixed(4));
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    document.querySelectorAll("#outputs li").forEach(function (li, j) {
      li.classList.toggle("best", j === k);
    });
  }

  function show(data) {
    result = data;
    var list = el("outputs");
    list.innerHTML = "";
    data.outputs.forEach(function (o, k) {
      var li = document.createElement("li");
      li.className = "output";
      li.appendChild(cell("span", o.text === "" ? "(empty)" : o.text));
      li.appendChild(cell("span", "  log p = " + o.log_prob.toFixed(3) + (o.finished ? "" : " (cut)")));
      li.addEventListener("click", function () { drawAttention(k); });
      list.appendChild(li);
    });
    el("unknown").textContent = data.unknown.length ?
      "Read as <unk> (never seen in training): " + data.unknown.join(" ") : "";
    if (data.outputs.length) { drawAttention(0); }
  }

  function translate() {
    var text = el("source").value;
    el("error").textContent = "";
    if (!text.trim()) { return; }
    if (pending) { pending.abort(); }
    pending = new AbortController();
    var body = {
      text: text, beam: Number(el("beam").value), n_best: Number(el("n-best").value),
      length_penalty: Number(el("length-penalty").value),
    };
    rnnlab.api("/api/runs/" + encodeURIComponent(el("run").value) + "/translate", body, pending.signal)
      .then(show)
      .catch(function (e) { if (e.name !== "AbortError") { el("error").textContent = e.message; } });
  }

  rnnlab.start("translate").then(function (runs) {
    if (!rnnlab.runPicker(el("run"), runs, "translate").length) { return; }
    el("none").classList.add("hidden");
    el("translate-ui").classList.remove("hidden");
    var later = rnnlab.debounce(translate, 200);
    ["source", "beam", "n-best", "length-penalty"].forEach(function (id) {
      el(id).addEventListener("input", later);
    });
    el("run").addEventListener("change", translate);
    translate();
  }).catch(function (e) { el("error").textContent = e.message; });
})();
