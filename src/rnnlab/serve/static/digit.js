// Digit classifier page: draw on a canvas (pointer events: mouse, touch, pen) or upload a
// file; the drawing is scaled to 28x28 like MNIST and POSTed to /trace, which answers the
// class probabilities after each row and the gates.
"use strict";
(function () {
  var ORDER = ["i", "f", "g", "o", "c", "h", "r", "z", "n"];
  var el = function (id) { return document.getElementById(id); };
  var pad = el("pad"), ctx = pad.getContext("2d");
  var runs = [], drawing = false, last = null, timer = null, seq = 0, uploaded = null;

  function current() {
    var name = el("run").value;
    return runs.filter(function (r) { return r.name === name; })[0];
  }

  function clear() {
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
    uploaded = null;
  }

  function position(event) {
    var box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width,
            (event.clientY - box.top) * pad.height / box.height];
  }

  function stroke(from, to) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(to[0], to[1]); ctx.stroke();
  }

  // The pad as MNIST draws digits: the ink's bounding box scaled to fit 20x20, centred in
  // 28x28, each pixel the mean of its block, in [0, 1]. null when nothing is drawn.
  function padImage() {
    var pixels = ctx.getImageData(0, 0, pad.width, pad.height).data;
    var x0 = pad.width, y0 = pad.height, x1 = -1, y1 = -1;
    for (var y = 0; y < pad.height; y++) {
      for (var x = 0; x < pad.width; x++) {
        if (pixels[4 * (y * pad.width + x)] > 25) {
          x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        }
      }
    }
    if (x1 < 0) { return null; }
    var w = x1 - x0 + 1, h = y1 - y0 + 1, s = 20 / Math.max(w, h);
    var small = document.createElement("canvas");
    small.width = 28; small.height = 28;
    var sctx = small.getContext("2d");
    sctx.fillStyle = "#000"; sctx.fillRect(0, 0, 28, 28);
    sctx.imageSmoothingEnabled = true; sctx.imageSmoothingQuality = "high";
    sctx.drawImage(pad, x0, y0, w, h, 14 - w * s / 2, 14 - h * s / 2, w * s, h * s);
    return grey(sctx);
  }

  function grey(sctx) {
    var data = sctx.getImageData(0, 0, 28, 28).data, rows = [];
    for (var r = 0; r < 28; r++) {
      var row = [];
      for (var c = 0; c < 28; c++) {
        var k = 4 * (r * 28 + c);
        row.push(Math.round((data[k] + data[k + 1] + data[k + 2]) / 7.65) / 100);
      }
      rows.push(row);
    }
    return rows;
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(send, delay);
  }

  function send() {
    var run = current(), image = uploaded || padImage();
    if (!run || !image) { return; }
    var mine = ++seq;
    var body = { image: image, invert: uploaded ? "auto" : "never",
                 layer: Number(el("layer").value || 0), direction: Number(el("direction").value || 0) };
    rnnlab.api("/api/runs/" + encodeURIComponent(run.name) + "/trace", body)
      .then(function (data) {
        if (mine !== seq) { return; }
        el("error").textContent = ""; render(data);
      })
      .catch(function (e) { if (mine === seq) { el("error").textContent = e.message; } });
  }

  function render(data) {
    var seen = el("seen");
    seen.width = data.image[0].length; seen.height = data.image.length;
    drawGrey(seen, data.image);
    seen.style.width = "140px"; seen.style.height = "140px";

    el("prediction").textContent = "Prediction: " + data.label_name + " (" +
      data.probability.toFixed(3) + ")";
    var probs = el("probs");
    probs.innerHTML = "";
    data.classes.forEach(function (name, k) {
      var line = document.createElement("div"), bar = document.createElement("span");
      line.className = "class-prob" + (k === data.label ? " best" : "");
      line.textContent = name + " " + data.probabilities[k].toFixed(3) + " ";
      bar.className = "bar"; bar.style.width = (data.probabilities[k] * 10).toFixed(2) + "em";
      line.appendChild(bar); probs.appendChild(line);
    });

    drawRows(el("rows"), data.step_probabilities, data.classes);

    var units = data.top_units.slice(0, 16), maps = el("heatmaps");
    maps.innerHTML = "";
    ORDER.filter(function (g) { return data.gates[g]; }).forEach(function (g) {
      var matrix = data.gates[g].map(function (row) {
        return units.map(function (u) { return row[u]; });
      });
      var figure = document.createElement("figure"), canvas = document.createElement("canvas"),
          caption = document.createElement("figcaption");
      canvas.className = "pixel gate-map";
      rnnlab.heatmap(canvas, matrix, g, rnnlab.SIGMOID[g] ? null : rnnlab.scales(matrix));
      canvas.style.width = (units.length * 8) + "px";
      canvas.style.height = (matrix.length * 6) + "px";
      caption.textContent = g;
      figure.appendChild(canvas); figure.appendChild(caption); maps.appendChild(figure);
    });
  }

  // (rows x classes) probabilities as green cells, class names on top, row numbers at left.
  function drawRows(canvas, probabilities, classes) {
    var W = 18, H = 9, left = 24, top = 16, c = canvas.getContext("2d");
    canvas.width = left + classes.length * W; canvas.height = top + probabilities.length * H;
    c.fillStyle = "#fff"; c.fillRect(0, 0, canvas.width, canvas.height);
    c.fillStyle = "#333"; c.font = "11px sans-serif"; c.textAlign = "center";
    classes.forEach(function (name, k) { c.fillText(name, left + k * W + W / 2, 11); });
    c.textAlign = "right";
    probabilities.forEach(function (row, t) {
      if (t % 7 === 0) { c.fillStyle = "#333"; c.fillText(String(t), left - 4, top + t * H + H); }
      row.forEach(function (p, k) {
        c.fillStyle = rnnlab.colour(p, "f");
        c.fillRect(left + k * W, top + t * H, W - 1, H - 1);
      });
    });
  }

  function drawGrey(canvas, image) {
    var c = canvas.getContext("2d");
    for (var r = 0; r < image.length; r++) {
      for (var k = 0; k < image[r].length; k++) {
        var v = Math.round(image[r][k] * 255);
        c.fillStyle = "rgb(" + v + "," + v + "," + v + ")";
        c.fillRect(k, r, 1, 1);
      }
    }
  }

  pad.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    if (uploaded) { clear(); }
    pad.setPointerCapture(event.pointerId);
    drawing = true; last = position(event);
    stroke(last, last);
  });
  pad.addEventListener("pointermove", function (event) {
    if (!drawing) { return; }
    var p = position(event);
    stroke(last, p); last = p;
    schedule(300);  // while drawing: at most one request per pause
  });
  function end() {
    if (!drawing) { return; }
    drawing = false; schedule(0);
  }
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);

  el("clear").addEventListener("click", function () {
    clear(); seq++;
    ["probs", "heatmaps", "prediction", "error"].forEach(function (id) { el(id).innerHTML = ""; });
  });
  el("upload").addEventListener("change", function () {
    var file = el("upload").files[0];
    if (!file) { return; }
    createImageBitmap(file).then(function (bitmap) {
      clear();
      ctx.drawImage(bitmap, 0, 0, pad.width, pad.height);
      var small = document.createElement("canvas");
      small.width = 28; small.height = 28;
      var sctx = small.getContext("2d");
      sctx.fillStyle = "#fff"; sctx.fillRect(0, 0, 28, 28);  // transparent PNGs: on white
      sctx.drawImage(bitmap, 0, 0, 28, 28);
      uploaded = grey(sctx);
      send();
    }).catch(function (e) { el("error").textContent = "could not read the image: " + e.message; });
  });
  el("run").addEventListener("change", send);
  el("layer").addEventListener("change", send);
  el("direction").addEventListener("change", send);

  clear();
  rnnlab.start("digit").then(function (all) {
    runs = rnnlab.runPicker(el("run"), all, "digit");
    if (!runs.length) { el("error").textContent = "No digit-classifier run is served."; return; }
    el("run").addEventListener("change", layers);
    layers();
  }).catch(function (e) { el("error").textContent = e.message; });

  function layers() {
    var run = current();
    [["layer", run.layers, "layer "], ["direction", run.directions, ""]].forEach(function (s) {
      var select = el(s[0]);
      select.innerHTML = "";
      for (var k = 0; k < s[1]; k++) {
        var o = document.createElement("option");
        o.value = String(k);
        o.textContent = s[0] === "direction" ? (k ? "backwards" : "forwards") : s[2] + k;
        select.appendChild(o);
      }
      select.parentNode.classList.toggle("hidden", s[1] < 2);
    });
  }
})();
