// The send's progress page, updated in place: polls the page's JSON twin and writes the
// figures into the elements marked data-figure. Without this script the page reloads
// itself (meta refresh); with it, the reload is replaced by the polling.
(function () {
  "use strict";
  var refresh = document.querySelector('meta[http-equiv="refresh"]');
  if (refresh) { refresh.parentNode.removeChild(refresh); }
  var address = window.location.pathname + ".json";
  var polls = 0;
  function show(data) {
    var figures = (data.job && data.job.progress) || {};
    var cells = document.querySelectorAll("[data-figure]");
    for (var i = 0; i < cells.length; i++) {
      var name = cells[i].getAttribute("data-figure");
      // null: not known yet (a send counts its audience beside the sending).
      if (name in figures && figures[name] !== null) {
        cells[i].textContent = String(figures[name]);
      }
    }
    if (!data.running) { window.location.reload(); return; }
    poll();
  }
  function poll() {
    polls += 1;
    if (polls > 100000) { return; }  // bounded, as everything else
    window.setTimeout(function () {
      fetch(address, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.json(); })
        .then(show)
        .catch(function () { window.location.reload(); });
    }, 1000);
  }
  poll();
})();
