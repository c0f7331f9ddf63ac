// Keyboard shortcuts, and the help popover that lists them.
import { h } from "./dom.js";

export const SHORTCUTS = [
  ["1 … 9", "step actor N one micro-step"],
  ["r", "run (mode, seed and speed from the toolbar)"],
  ["p / Space", "pause (Space toggles run / pause)"],
  ["b / ←", "step back one decision"],
  ["f / →", "forward one recorded decision (when rewound)"],
  ["Home / End", "seek to the start / the end of the recording"],
  ["k", "fork here (a new session from this position)"],
  ["e", "explore every interleaving"],
  ["i", "focus the inject form's IPA field, its text selected (type to replace it)"],
  ["t", "focus the table tree"],
  ["l", "focus the timeline"],
  ["?", "this help"],
  ["Esc", "close popovers, dismiss messages"],
];

export const TREE_KEYS = [
  ["↑ ↓ PgUp PgDn", "move between descriptors"],
  ["→ / ←", "expand (subscribe) / collapse (unsubscribe), or go to parent"],
  ["Enter / double-click", "expand or collapse a table; on a leaf, use its IPA in the inject form"],
  ["click", "use this row's IPA in the inject form"],
];

export const TIMELINE_KEYS = [
  ["← →", "previous / next event (shows its descriptor)"],
  ["click a chip", "hide / show an actor or kind (Shift+click: only that one)"],
];

export class Help {
  constructor() {
    const table = (rows) =>
      h("table", { class: "keys" }, h("tbody", null, rows.map(([k, v]) => h("tr", null, h("th", null, h("kbd", null, k)), h("td", null, v)))));
    this.closeBtn = h("button", { type: "button", class: "btn small ghost", "aria-label": "Close help" }, "×");
    this.el = h(
      "div",
      { class: "help-pop", role: "dialog", "aria-modal": "false", "aria-label": "Keyboard shortcuts", hidden: true, tabindex: "-1" },
      h("header", null, h("h2", null, "Keyboard shortcuts"), this.closeBtn),
      h("div", { class: "help-cols" },
        h("div", null, h("h3", null, "Session"), table(SHORTCUTS)),
        h("div", null, h("h3", null, "Table tree"), table(TREE_KEYS), h("h3", null, "Timeline"), table(TIMELINE_KEYS),
          h("p", { class: "muted small" }, "Shortcuts are ignored while typing in a field. Decisions (step, run, inject) need a control link and a session at its end: fork to branch from an earlier position."))),
    );
    this.closeBtn.addEventListener("click", () => this.close());
    this.returnFocus = null;
  }

  get open() {
    return !this.el.hidden;
  }

  toggle() {
    if (this.open) this.close();
    else {
      this.returnFocus = document.activeElement;
      this.el.hidden = false;
      this.el.focus();
    }
  }

  close() {
    if (!this.open) return;
    this.el.hidden = true;
    if (this.returnFocus && this.returnFocus.focus) this.returnFocus.focus();
  }
}
