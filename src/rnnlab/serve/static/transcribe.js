// Transcribe page: a recording (microphone via getUserMedia, or an uploaded WAV) or a line of
// digits written on a canvas, POSTed to /transcribe; shows the transcript, the frames read,
// the posteriogram (frames x symbols) and the alignment. The microphone's audio is decoded and
// resampled by the browser's own Web Audio (OfflineAudioContext) to the run's rate, then sent
// as a 16-bit WAV; the server reads it like any WAV file.
"use strict";
(function () {
  var el = function (id) { return document.getElementById(id); };
  var pad = el("pad"), ctx = pad.getContext("2d");
  var runs = [], drawing = false, last = null, timer = null, seq = 0, lastBody = null;
  var RATE = 8000, LINE = 32;

  function current() {
    var name = el("run").value;
    return runs.filter(function (r) { return r.name === name; })[0];
  }

  function show() {
    var run = current();
    if (!run) { return; }
    el("audio-box").classList.toggle("hidden", run.reads !== "audio");
    el("line-box").classList.toggle("hidden", run.reads !== "image");
    el("cap").textContent = Math.floor(run.max_wav_bytes / 1000);
    LINE = run.line_height || LINE;
  }

  function send(body) {
    var run = current();
    if (!run || !body) { return; }
    lastBody = body;
    body.beam = Number(el("beam").value);
    var mine = ++seq;
    el("transcript").textContent = "...";
    rnnlab.api("/api/runs/" + encodeURIComponent(run.name) + "/transcribe", body)
      .then(function (data) { if (mine === seq) { el("error").textContent = ""; render(data); } })
      .catch(function (e) {
        if (mine === seq) { el("error").textContent = e.message; el("transcript").textContent = ""; }
      });
  }

  function render(data) {
    el("transcript").textContent = data.transcript === "" ? "(nothing)" : data.transcript;
    var notes = [];
    if (data.notes.mixed_down) { notes.push("stereo mixed down to mono"); }
    if (data.notes.resampled_from) { notes.push("resampled from " + data.notes.resampled_from + " Hz"); }
    el("notes").textContent = notes.join("; ");
    el("alignment").textContent = data.alignment;
    drawFrames(el("frames"), data.frames);
    drawPosteriogram(el("posteriogram"), data.posteriogram, data.symbols);
  }

  // (T, F) frames as columns, feature 0 at the bottom, scaled to the frames' own range.
  function drawFrames(canvas, frames) {
    var T = frames.length, F = T ? frames[0].length : 0, lo = Infinity, hi = -Infinity;
    frames.forEach(function (f) { f.forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); }); });
    canvas.width = T; canvas.height = F;
    var c = canvas.getContext("2d");
    for (var t = 0; t < T; t++) {
      for (var k = 0; k < F; k++) {
        var v = Math.round(255 * (frames[t][k] - lo) / Math.max(hi - lo, 1e-6));
        c.fillStyle = "rgb(" + v + "," + v + "," + v + ")";
        c.fillRect(t, F - 1 - k, 1, 1);
      }
    }
    canvas.style.width = Math.max(200, T * 3) + "px"; canvas.style.height = (F * 3) + "px";
  }

  // (T, S) probabilities: a row per symbol (named at left), a column per frame.
  function drawPosteriogram(canvas, probs, symbols) {
    var W = 3, H = 12, left = 20, T = probs.length, c = canvas.getContext("2d");
    W = T === 1 ? 30 : W;
    canvas.width = left + T * W; canvas.height = symbols.length * H;
    c.fillStyle = "#fff"; c.fillRect(0, 0, canvas.width, canvas.height);
    c.fillStyle = "#333"; c.font = "10px sans-serif"; c.textAlign = "right";
    symbols.forEach(function (s, k) { c.fillText(s, left - 4, k * H + H - 2); });
    probs.forEach(function (row, t) {
      row.forEach(function (p, k) {
        c.fillStyle = rnnlab.colour(p, "f");
        c.fillRect(left + t * W, k * H, W, H - 1);
      });
    });
  }

  // -- audio: WAV bytes -> base64; the microphone -> 16-bit WAV at the run's rate ------------
  function base64(buffer) {
    var bytes = new Uint8Array(buffer), text = "";
    for (var k = 0; k < bytes.length; k += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
    }
    return btoa(text);
  }

  function wavBytes(samples, rate) {
    var buffer = new ArrayBuffer(44 + 2 * samples.length), v = new DataView(buffer);
    function text(at, s) { for (var k = 0; k < s.length; k++) { v.setUint8(at + k, s.charCodeAt(k)); } }
    text(0, "RIFF"); v.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE");
    text(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true);
    v.setUint16(34, 16, true); text(36, "data"); v.setUint32(40, 2 * samples.length, true);
    for (var k = 0; k < samples.length; k++) {
      var s = Math.max(-1, Math.min(1, samples[k]));
      v.setInt16(44 + 2 * k, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    return buffer;
  }

  // Float32 chunks at `from` Hz -> the run's rate, resampled by the browser's Web Audio.
  function resample(chunks, from) {
    var n = chunks.reduce(function (a, c) { return a + c.length; }, 0);
    var audio = new OfflineAudioContext(1, Math.max(1, Math.ceil(n * RATE / from)), RATE);
    var buffer = audio.createBuffer(1, n, from), data = buffer.getChannelData(0), at = 0;
    chunks.forEach(function (c) { data.set(c, at); at += c.length; });
    var source = audio.createBufferSource();
    source.buffer = buffer; source.connect(audio.destination); source.start();
    return audio.startRendering().then(function (out) { return out.getChannelData(0); });
  }

  function record() {
    var seconds = Number(el("seconds").value), chunks = [];
    el("error").textContent = ""; el("record").disabled = true;
    el("transcript").textContent = "recording...";
    navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      var audio = new AudioContext(), source = audio.createMediaStreamSource(stream);
      var node = audio.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = function (e) { chunks.push(new Float32Array(e.inputBuffer.getChannelData(0))); };
      source.connect(node); node.connect(audio.destination);
      setTimeout(function () {
        node.disconnect(); source.disconnect();
        stream.getTracks().forEach(function (t) { t.stop(); });
        var rate = audio.sampleRate;
        audio.close();
        resample(chunks, rate).then(function (samples) {
          send({ wav: base64(wavBytes(samples, RATE)) });
        });
        el("record").disabled = false;
      }, seconds * 1000);
    }).catch(function (e) {
      el("record").disabled = false;
      el("error").textContent = "no microphone: " + e.message;
    });
  }

  // -- writing: the pad's ink scaled to the line height, columns kept in proportion ----------
  function clear() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); }
  function position(event) {
    var box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width,
            (event.clientY - box.top) * pad.height / box.height];
  }
  function stroke(from, to) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 10; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(to[0], to[1]); ctx.stroke();
  }
  function lineImage() {
    var scale = LINE / pad.height, W = Math.max(1, Math.round(pad.width * scale));
    var small = document.createElement("canvas");
    small.width = W; small.height = LINE;
    var s = small.getContext("2d");
    s.imageSmoothingEnabled = true; s.imageSmoothingQuality = "high";
    s.drawImage(pad, 0, 0, W, LINE);
    var data = s.getImageData(0, 0, W, LINE).data, rows = [];
    for (var r = 0; r < LINE; r++) {
      var row = [];
      for (var k = 0; k < W; k++) { row.push(Math.round(data[4 * (r * W + k)] / 2.55) / 100); }
      rows.push(row);
    }
    return rows;
  }
  pad.addEventListener("pointerdown", function (event) {
    event.preventDefault(); pad.setPointerCapture(event.pointerId);
    drawing = true; last = position(event); stroke(last, last);
  });
  pad.addEventListener("pointermove", function (event) {
    if (!drawing) { return; }
    var p = position(event); stroke(last, p); last = p;
  });
  function end() {
    if (!drawing) { return; }
    drawing = false;
    clearTimeout(timer);
    timer = setTimeout(function () { send({ image: lineImage(), invert: "never" }); }, 200);
  }
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  el("clear").addEventListener("click", function () { clear(); seq++; el("transcript").textContent = ""; });

  el("record").addEventListener("click", record);
  el("upload").addEventListener("change", function () {
    var file = el("upload").files[0], run = current();
    if (!file) { return; }
    if (run && file.size > run.max_wav_bytes) {
      el("error").textContent = "expected a WAV of at most " + run.max_wav_bytes + " bytes, got " + file.size;
      return;
    }
    file.arrayBuffer().then(function (b) { send({ wav: base64(b) }); });
  });
  el("beam").addEventListener("change", function () { send(lastBody); });
  el("run").addEventListener("change", show);

  clear();
  rnnlab.start("transcribe").then(function (all) {
    runs = rnnlab.runPicker(el("run"), all, "transcribe");
    if (!runs.length) { el("error").textContent = "No transcription run is served."; return; }
    show();
  }).catch(function (e) { el("error").textContent = e.message; });
})();
