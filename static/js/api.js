// HTTP endpoints next to the websocket (docs/protocol.md, "HTTP"): fork, share links,
// recording export. POSTs carry Django's CSRF token and the page's share token.

export class Api {
  constructor(boot) {
    this.boot = boot;
    this.base = `/sessions/${encodeURIComponent(boot.session)}`;
  }

  csrf() {
    if (this.boot.csrf) return this.boot.csrf;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async post(path, body) {
    const res = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": this.csrf(),
        "X-Ptviz-Token": this.boot.token || "",
      },
      body: JSON.stringify({ token: this.boot.token, ...body }),
    });
    let data = null;
    const type = res.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        data = await res.json();
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new Error((data && (data.message || data.error)) || `${res.status} ${res.statusText}`);
      err.code = (data && data.code) || `http_${res.status}`;
      err.where = (data && data.where) || null;
      throw err;
    }
    if (!data && res.redirected) data = { url: res.url };
    return data || {};
  }

  /** The URL a fork/link response names (absolute). */
  static linkOf(data) {
    const u = data.url || data.link || data.href || data.location || (data.links && (data.links.control || data.links.view));
    return u ? new URL(u, location.href).href : null;
  }

  fork(fields) {
    return this.post(`${this.base}/fork`, fields);
  }

  link(role) {
    return this.post(`${this.base}/links`, { role });
  }

  recordingUrl() {
    if (this.boot.recording) return this.boot.recording;
    const q = this.boot.token ? `?token=${encodeURIComponent(this.boot.token)}` : "";
    return `${this.base}/recording.json${q}`;
  }
}
