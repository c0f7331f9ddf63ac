// Bug reports from the session page (docs/bundle.md): the report of the path to the
// moment this viewer is at (its cursor, on any branch) (the same text as `python -m engine report`), with a copy button,
// and "export bundle" of that path. A toolbar menu next to "share…".
import { h } from "./dom.js";
import { label } from "./icons.js";
import { momentName } from "./moments.js";

export class BugReportMenu {
  constructor(store, api) {
    this.store = store;
    this.api = api;
    this.out = h("pre", { class: "report-text", hidden: true, "aria-live": "polite" });
    this.status = h("span", { class: "small muted" });
    this.bundleLink = h("a", { class: "btn", download: "", title: "Download the bundle of the path to this position (scenario, decisions, state hashes)", html: label("download", "export bundle") });
    this.copyBtn = h("button", { type: "button", class: "btn", disabled: true, title: "Copy the report", onclick: () => this.copy() }, "copy");
    const fmt = (format, text, title) => h("button", { type: "button", class: "btn", title, onclick: () => this.fetchReport(format) }, text);
    this.el = h("details", { class: "menu right bugreport" },
      h("summary", { class: "btn", title: "A mailing-list report of this position, and its bundle" }, "report…"),
      h("div", { class: "menu-body" },
        h("div", { class: "row" },
          fmt("text", "report", "The interleaving up to this position as plain text (100 columns)"),
          fmt("markdown", "markdown", "The same as a Markdown table"),
          this.copyBtn, this.bundleLink),
        this.status,
        this.out));
    // The body opens rightwards from its button; where the toolbar put the button near
    // the window's right edge (long actor names), shift it back inside the window.
    this.el.addEventListener("toggle", () => {
      const body = this.el.querySelector(".menu-body");
      body.style.left = "";
      if (!this.el.open) return;
      const r = body.getBoundingClientRect();
      const over = r.right - (document.documentElement.clientWidth - 8);
      if (over > 0) body.style.left = `${-Math.min(over, Math.max(0, r.left - 8))}px`;
    });
  }

  /** Where this viewer is: its cursor's moment (on any branch), else the position. */
  where() {
    const moment = this.store.cursor?.moment;
    return moment != null ? `moment=${encodeURIComponent(moment)}` : `position=${this.store.position}`;
  }

  query(extra = "") {
    const token = this.api.boot.token ? `&token=${encodeURIComponent(this.api.boot.token)}` : "";
    return `?${this.where()}${token}${extra}`;
  }

  async fetchReport(format) {
    this.status.textContent = `report of the path to ${momentName(this.store.cursor?.moment ?? this.store.position)}…`;
    try {
      const res = await fetch(`${this.api.base}/report${this.query(`&format=${format}`)}`, { credentials: "same-origin" });
      const text = await res.text();
      if (!res.ok) throw new Error(text);
      this.out.textContent = text;
      this.out.hidden = false;
      this.copyBtn.disabled = false;
      this.status.textContent = momentName(this.store.cursor?.moment ?? this.store.position);
    } catch (err) {
      this.status.textContent = `report failed: ${err.message}`;
    }
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.out.textContent);
      this.status.textContent = "copied";
    } catch {
      // no clipboard permission (plain http, headless): select the text for Ctrl-C
      const range = document.createRange();
      range.selectNodeContents(this.out);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      this.status.textContent = "selected: press Ctrl-C";
    }
  }

  render() {
    this.bundleLink.href = `${this.api.base}/bundle${this.query()}`;
  }
}
