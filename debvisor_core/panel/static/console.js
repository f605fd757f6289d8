// The console page: noVNC against the panel's proxy (/console/ws?t=TICKET).
//
// The page renders <div id="console" data-ticket="..." data-mode="view|control"> and,
// optionally, #console-status (text), #console-cad (a Ctrl-Alt-Del button) and
// #console-screen (where the screen goes; default: #console itself). viewOnly is set here
// as a courtesy; the server is what enforces it (it drops input in view mode).
// The WebSocket is opened here (not by noVNC) so that the close code and reason the proxy
// sends (ticket used or expired, too many consoles, session ended) can be shown.
import RFB from "/static/vendor/novnc/core/rfb.js";

const REASONS = {
  "used": "This console link was already used. Open the console again from the VM page.",
  "expired": "This console link expired (it must be opened within 30 seconds). Open the console again.",
  "unknown": "This console link is not valid. Open the console again from the VM page.",
  "wrong-user": "This console link belongs to another session.",
};

function describeClose(ev) {
  if (ev.code === 4403) return REASONS[ev.reason] || `Console refused: ${ev.reason}`;
  if (ev.code === 4401) return "Your session ended. Log in again.";
  if (ev.code === 4429) return ev.reason || "Too many consoles are open.";
  if (ev.code === 4408) return "The console reached its time limit.";
  if (ev.code === 4502) return `The VM's console could not be reached (${ev.reason || "no reason given"}).`;
  if (ev.code === 1008) return `The console was closed: ${ev.reason || "protocol error"}.`;
  if (ev.code === 1000 || ev.code === 1005) return ev.reason || "The console was closed.";
  return `The console connection ended (${ev.code}${ev.reason ? ": " + ev.reason : ""}).`;
}

function start() {
  const el = document.getElementById("console");
  if (!el) return;
  const ticket = el.dataset.ticket || "";
  const mode = el.dataset.mode === "control" ? "control" : "view";
  const status = document.getElementById("console-status");
  const screen = document.getElementById("console-screen") || el;
  const say = (text) => { if (status) status.textContent = text; };

  const scheme = window.location.protocol === "http:" ? "ws:" : "wss:";
  const url = `${scheme}//${window.location.host}/console/ws?t=${encodeURIComponent(ticket)}`;
  const ws = new WebSocket(url, ["binary"]);
  let refused = null;
  ws.addEventListener("close", (ev) => { refused = describeClose(ev); say(refused); });

  say(mode === "control" ? "Connecting (control)…" : "Connecting (view only)…");
  const rfb = new RFB(screen, ws, { shared: true });
  rfb.viewOnly = mode !== "control";
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = mode === "control";
  rfb.addEventListener("connect", () => {
    say(mode === "control" ? "Connected: you control this console." : "Connected: watching (view only).");
  });
  rfb.addEventListener("disconnect", () => { if (!refused) say("Disconnected."); });
  rfb.addEventListener("securityfailure", (ev) => { say(`Security failure: ${ev.detail.reason || ""}`); });
  rfb.addEventListener("desktopname", (ev) => { el.dataset.desktopName = ev.detail.name; });

  const cad = document.getElementById("console-cad");
  if (cad) {
    cad.hidden = mode !== "control";
    cad.addEventListener("click", () => { if (mode === "control") rfb.sendCtrlAltDel(); });
  }
  window.addEventListener("pagehide", () => { try { rfb.disconnect(); } catch (e) { /* gone */ } });
}

start();
