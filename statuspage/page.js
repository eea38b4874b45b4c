(function () {
  "use strict";
  var secs = Number(document.body.getAttribute("data-refresh")) || 5;
  var busy = false;
  function refresh() {
    if (document.hidden || busy) { return; }
    busy = true;
    fetch(location.pathname, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ["header.top", "main"].forEach(function (sel) {
          var now = document.querySelector(sel), next = doc.querySelector(sel);
          if (now && next) { now.replaceWith(document.adoptNode(next)); }
        });
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); })
      .then(function () { busy = false; });
  }
  setInterval(refresh, secs * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
