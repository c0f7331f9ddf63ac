// The error area: visible, dismissable messages (code + message), newest first.
import { h } from "./dom.js";

export class Notices {
  constructor() {
    this.el = h("div", { class: "notices", role: "region", "aria-label": "Messages" });
    this.list = h("div", { class: "notice-list", "aria-live": "assertive" });
    this.el.append(this.list);
    this.count = 0;
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
        h("button", { type: "button", class: "btn small", onclick: () => { a.run(); item.remove(); } }, a.label),
      ),
      close,
    );
    close.addEventListener("click", () => item.remove());
    this.list.prepend(item);
    while (this.list.children.length > 6) this.list.lastChild.remove();
    if (!n.sticky && kind !== "error") setTimeout(() => item.remove(), n.timeout || 4000);
    return item;
  }

  error(code, message, actions) {
    return this.show({ code, message, kind: "error", actions });
  }

  info(message, timeout) {
    return this.show({ message, kind: "info", timeout });
  }

  /** Drop messages with this code (their cause went away). */
  removeCode(code) {
    for (const item of [...this.list.children]) if (item.dataset.key.split("|")[1] === code) item.remove();
  }

  clear() {
    this.list.replaceChildren();
  }
}
