// Home page: each served run with a link to its page.
"use strict";
(function () {
  rnnlab.start("index").then(function (runs) {
    var list = document.getElementById("list");
    runs.forEach(function (r) {
      var li = document.createElement("li"), a = document.createElement("a");
      a.href = "/" + r.page + "?run=" + encodeURIComponent(r.name);
      a.textContent = r.name;
      li.appendChild(a);
      li.appendChild(document.createTextNode(
        ": " + r.title + ", " + r.cell.toUpperCase() + ", " + r.layers + " layer(s) of " +
        r.hidden_sizes.join("/") + " units, " + (r.vocab_size ?
          r.level + " vocabulary of " + r.vocab_size + " tokens" :
          "classes " + r.classes.join(", ")) +
        " (checkpoint " + r.checkpoint + ", step " + r.step + ")"));
      list.appendChild(li);
    });
  }).catch(function (e) { document.getElementById("error").textContent = e.message; });
})();
