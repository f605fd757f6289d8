// debvisor-panel: the little the pages need beyond htmx. No eval, no inline handlers
// (the Content-Security-Policy forbids both).
(function () {
  "use strict";
  // A form with data-confirm asks first.
  document.addEventListener("submit", function (e) {
    var msg = e.target && e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { e.preventDefault(); }
  }, true);
  // The server ended the session (idle, time limit, logout elsewhere): go to the login
  // page, which says why. The event comes over the tab's one SSE stream (htmx sse ext).
  document.addEventListener("htmx:sseMessage", function (e) {
    var d = e.detail || {};
    if (d.type === "ended") {
      var why = /^[a-z-]{1,20}$/.test(d.data || "") ? d.data : "";
      window.location.assign("/login" + (why && why !== "none" ? "?why=" + why : ""));
    }
  });
})();
