// The websocket to the server (docs/protocol.md, version 1): reconnects with backoff,
// numbers commands, resolves them on `ack` and rejects them on `error`.

export const PROTOCOL = 1;

export class Connection {
  /**
   * @param {string} url      ws:// or wss:// URL (or a path, resolved against the page)
   * @param {object} opts     onMessage(msg), onStatus(status, detail), factory(url)
   */
  constructor(url, { onMessage, onStatus, factory } = {}) {
    this.url = absoluteWs(url);
    this.onMessage = onMessage || (() => {});
    this.onStatus = onStatus || (() => {});
    this.factory = factory || ((u) => new WebSocket(u));
    this.custom = !!factory;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, cmd}
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.helloSeen = false;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.closed) return;
    this.onStatus(this.attempt ? "reconnecting" : "connecting", "");
    let ws;
    const early = this.attempt || this.custom ? null : takeEarly(this.url);
    try {
      ws = early ? early.ws : this.factory(this.url);
    } catch (err) {
      this.scheduleReconnect(String(err));
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.onopen = () => this.onStatus("open", "");
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.onMessage({ v: PROTOCOL, type: "error", id: null, code: "bad_message", message: "the server sent a message that is not JSON" });
        return;
      }
      if (msg.type === "hello") {
        this.attempt = 0;
        this.helloSeen = true;
        this.onStatus("live", "");
      } else if (msg.type === "ack") {
        const p = this.pending.get(msg.id);
        if (p) {
          this.pending.delete(msg.id);
          p.resolve(msg);
        }
      } else if (msg.type === "error" && msg.id !== null && msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        if (p) {
          this.pending.delete(msg.id);
          msg.cmd = p.cmd;
          p.reject(msg);
        }
      }
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const [, p] of this.pending) p.reject({ code: "disconnected", message: "connection closed", silent: true });
      this.pending.clear();
      const why = ev && ev.code ? `closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})` : "closed";
      this.scheduleReconnect(why, ev && ev.code);
    };
    ws.onerror = () => {}; // onclose follows and does the work
    if (early) early.adopt(); // what it heard while the modules loaded, in order
  }

  scheduleReconnect(detail, code) {
    if (this.closed) return;
    // 4003/4004-style application closes (forbidden, no such session) are final.
    if (code && code >= 4000 && code < 4100) {
      this.onStatus("closed", detail);
      return;
    }
    this.attempt += 1;
    const base = Math.min(15000, 500 * 2 ** Math.min(this.attempt - 1, 5));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.onStatus("waiting", `${detail}; retrying in ${Math.ceil(delay / 1000)} s`);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** The URL the next (re)connect opens. */
  setUrl(url) {
    this.url = absoluteWs(url);
  }

  /** Retry now (the "reconnect" button). */
  retryNow() {
    if (this.ws) return;
    this.connect();
  }

  get open() {
    return !!this.ws && this.ws.readyState === 1 && this.helloSeen;
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify({ v: PROTOCOL, ...obj }));
    return true;
  }

  /** Send a command; resolves on ack, rejects with the error message object. */
  command(cmd, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.send({ type: "command", id, cmd, ...fields })) {
        reject({ code: "disconnected", message: `not connected: "${cmd}" was not sent`, cmd });
        return;
      }
      this.pending.set(id, { resolve, reject, cmd });
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}

/** The session page opens its websocket before the modules load (session.html: the
 * engine worker loads the session and answers meanwhile); the first connect takes it
 * over if it is for the same URL. */
function takeEarly(url) {
  const early = typeof window === "undefined" ? null : window.__ptvizEarlySocket;
  if (!early) return null;
  delete window.__ptvizEarlySocket;
  if (absoluteWs(early.url) !== url || early.ws.readyState > 1) {
    early.ws.close();
    return null;
  }
  const { ws } = early;
  return {
    ws,
    adopt() {
      const heard = early.heard;
      early.heard = null; // (from now on the Connection's handlers listen)
      ws.removeEventListener("open", early.onOpen);
      ws.removeEventListener("message", early.onMessage);
      if (early.opened) ws.onopen();
      for (const ev of heard) {
        if (ws.onmessage) ws.onmessage(ev);
      }
    },
  };
}

function absoluteWs(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${url.startsWith("/") ? "" : "/"}${url}`;
}
