// The scenario's source: shown in a popover, editable, re-run as a new session (a fork
// from position 0, POST /sessions/<id>/fork {scenario}). A bad edit is refused inline with
// the server's message; its line (or the line of the key it names) is selected and the
// text is kept as typed.
import { h } from "./dom.js";

/** The 1-based line a ScenarioError's `where` points at: "line 6", or a key path such as
 * "actor[1].do[1]", "map[0].ipa", "machine.hd", "expect.always[0]", "name". */
export function lineOf(text, where) {
  if (!where) return null;
  const m = /^line (\d+)/.exec(where);
  if (m) return Number(m[1]);
  const lines = text.split("\n");
  const k = /^(\w+)(?:\[(\d+)\])?(?:\.(\w+))?/.exec(where);
  if (!k) return null;
  const [, table, index, key] = k;
  let start = 0;
  let end = lines.length;
  const isHeader = (l) => /^\s*\[/.test(l);
  if (index !== undefined || key !== undefined) {
    // the table ([machine], [expect]) or the index-th array table ([[map]], [[actor]])
    const header = index !== undefined ? new RegExp(`^\\s*\\[\\[\\s*${table}\\s*\\]\\]`) : new RegExp(`^\\s*\\[\\s*${table}\\s*\\]`);
    let seen = -1;
    start = -1;
    for (let i = 0; i < lines.length; i++) {
      if (header.test(lines[i]) && ++seen === Number(index ?? 0)) {
        start = i;
        break;
      }
    }
    if (start < 0) return null;
    end = lines.findIndex((l, i) => i > start && isHeader(l));
    if (end < 0) end = lines.length;
    if (key === undefined) return start + 1;
  }
  const name = key ?? table;
  const re = new RegExp(`^\\s*"?${name}"?\\s*=`);
  for (let i = start; i < end; i++) {
    if (index === undefined && key === undefined && isHeader(lines[i])) break; // top-level keys come first
    if (re.test(lines[i])) return i + 1;
  }
  return index !== undefined || key !== undefined ? start + 1 : null;
}

export class SourcePanel {
  /** @param actions rerun(text) -> Promise (rejects with {message, where}) */
  constructor(boot, actions) {
    this.original = boot.scenario || "";
    this.a = actions;
    this.text = h("textarea", { class: "source-text mono", spellcheck: "false", rows: "24", "aria-label": "Scenario source (TOML)" });
    this.text.value = this.original;
    this.error = h("div", { class: "source-error", role: "alert", hidden: true });
    this.run = h("button", { type: "button", class: "btn primary", title: "Create a new session from this text (this one is kept)" }, "re-run as a new session");
    this.reset = h("button", { type: "button", class: "btn small" }, "undo my edits");
    this.closeBtn = h("button", { type: "button", class: "btn small ghost", "aria-label": "Close the scenario source" }, "×");
    this.el = h(
      "div",
      { class: "source-pop", role: "dialog", "aria-label": "Scenario source", hidden: true },
      h("header", null, h("h2", null, "Scenario source"), h("span", { class: "muted small" }, "edit it and re-run: a new session starts from the edited scenario (this one is not changed)"), this.closeBtn),
      this.text,
      this.error,
      h("div", { class: "row" }, this.run, this.reset),
    );
    this.closeBtn.addEventListener("click", () => this.close());
    this.reset.addEventListener("click", () => {
      this.text.value = this.original;
      this.showError(null);
    });
    this.run.addEventListener("click", () => this.rerun());
  }

  get open() {
    return !this.el.hidden;
  }

  toggle() {
    if (this.open) this.close();
    else {
      this.el.hidden = false;
      this.text.focus();
    }
  }

  close() {
    this.el.hidden = true;
  }

  async rerun() {
    this.run.disabled = true;
    this.showError(null);
    try {
      await this.a.rerun(this.text.value);
    } catch (err) {
      this.showError(err);
    } finally {
      this.run.disabled = false;
    }
  }

  showError(err) {
    this.error.hidden = !err;
    this.text.toggleAttribute("aria-invalid", !!err);
    if (!err) return;
    const line = lineOf(this.text.value, err.where || err.message.replace(/^[^:]*: /, ""));
    this.error.textContent = err.message + (line ? ` (line ${line} is selected)` : "");
    if (line) selectLine(this.text, line);
  }
}

/** Select (and scroll to) a 1-based line of a textarea. */
export function selectLine(ta, line) {
  const lines = ta.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  const end = start + (lines[line - 1] || "").length;
  ta.focus();
  ta.setSelectionRange(start, end);
  // scroll the line into view (rows are about one line-height each)
  const lh = parseFloat(getComputedStyle(ta).lineHeight) || 16;
  ta.scrollTop = Math.max(0, (line - 3) * lh);
}
