// The message area: dismissable messages (code + message), newest first. At most
// VISIBLE show; older ones fold into "+N older" (a click lists them all). It floats over
// the top of the work area, so a burst of messages never pushes the work area down.
import { h } from "./dom.js";

export const VISIBLE = 3;
const KEPT = 50;

export class Notices {
  constructor() {
    this.list = h("div", { class: "notice-list", "aria-live": "assertive" });
    this.more = h("button", { type: "button", class: "btn small ghost notice-more", hidden: true });
    this.more.addEventListener("click", () => {
      this.expanded = !this.expanded;
      this.layout();
    });
    this.el = h("div", { class: "notices", role: "region", "aria-label": "Messages" }, this.list, this.more);
    this.expanded = false;
  }

  /**
   * @param {object} n {code, message, kind ("error"|"info"|"ok"), actions:[{label, run}], sticky}
   */
  show(n) {
    const kind = n.kind || "error";
    const key = `${kind}|${n.code}|${n.message}`;
    // collapse repeats of the same message
    for (const item of this.list.children) {
      if (item.dataset.key === key) {
        const c = item.querySelector(".repeat");
        const k = Number(item.dataset.count || 1) + 1;
        item.dataset.count = k;
        c.textContent = `×${k}`;
        this.list.prepend(item);
        this.layout();
        return item;
      }
    }
    const close = h("button", { type: "button", class: "btn small ghost dismiss", "aria-label": "Dismiss", title: "Dismiss (Esc dismisses all)" }, "×");
    const item = h(
      "div",
      { class: `notice n-${kind}`, role: kind === "error" ? "alert" : "status", dataset: { key } },
      n.code ? h("code", { class: "code" }, n.code) : null,
      h("span", { class: "msg" }, n.message || ""),
      h("span", { class: "repeat" }),
      ...(n.actions || []).map((a) =>
        h("button", { type: "button", class: "btn small", onclick: () => { a.run(); this.remove(item); } }, a.label),
      ),
      close,
    );
    close.addEventListener("click", () => this.remove(item));
    this.list.prepend(item);
    while (this.list.children.length > KEPT) this.list.lastChild.remove();
    if (!n.sticky && kind !== "error") setTimeout(() => this.remove(item), n.timeout || 4000);
    this.layout();
    return item;
  }

  error(code, message, actions) {
    return this.show({ code, message, kind: "error", actions });
  }

  info(message, timeout) {
    return this.show({ message, kind: "info", timeout });
  }

  remove(item) {
    item.remove();
    this.layout();
  }

  /** Drop messages with this code (their cause went away). */
  removeCode(code) {
    let removed = false;
    for (const item of [...this.list.children]) {
      if (item.dataset.key.split("|")[1] === code) {
        item.remove();
        removed = true;
      }
    }
    if (removed) this.layout();
  }

  clear() {
    this.list.replaceChildren();
    this.layout();
  }

  /** Show the newest VISIBLE (all when expanded) and say how many more there are. */
  layout() {
    const items = [...this.list.children];
    const older = Math.max(0, items.length - VISIBLE);
    if (!older) this.expanded = false;
    items.forEach((item, i) => {
      item.hidden = !this.expanded && i >= VISIBLE;
    });
    this.el.classList.toggle("expanded", this.expanded);
    this.more.hidden = !older;
    this.more.textContent = this.expanded ? "show fewer" : `+${older} older`;
  }
}
