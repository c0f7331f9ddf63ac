// Explore every interleaving: progress, final states (with counts), violations, and
// counterexamples opened as forks to step through.
import { esc, h } from "./dom.js";
import { countText } from "./fmt.js";

export class ExplorePanel {
  /** @param actions explore(maxStates), openSchedule(schedule, label) */
  constructor(store, actions) {
    this.store = store;
    this.a = actions;
    this.max = h("input", { type: "number", min: "1", placeholder: "no limit", class: "num wide", "aria-label": "Maximum states to explore" });
    this.go = h("button", { type: "button", class: "btn", title: "Explore every interleaving from this moment (e)" }, "explore");
    this.go.addEventListener("click", () => this.a.explore());
    this.stop = h("button", { type: "button", class: "btn small", title: "Stop the exploration (the server stops its search)", hidden: true }, "cancel");
    this.stop.addEventListener("click", () => this.a.exploreCancel());
    this.progress = h("progress", { class: "explore-progress", "aria-label": "Exploration progress" });
    this.progressText = h("span", { class: "small explore-status", role: "status" });
    this.body = h("div", { class: "explore-body" });
    this.el = h("section", { class: "panel explore", "aria-label": "Explore every interleaving" },
      h("h2", null, "Explore every interleaving"),
      h("div", { class: "row" }, h("label", { class: "inline small" }, "max states ", this.max), this.go, this.stop, this.progress, this.progressText),
      this.body);
    this.body.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-schedule]");
      if (b) this.a.openSchedule(JSON.parse(b.dataset.schedule), b.dataset.label, Number(b.dataset.position || 0));
    });
    this.shown = null;
  }

  maxStates() {
    const n = Number(this.max.value);
    return n > 0 ? n : undefined;
  }

  render() {
    const s = this.store;
    const x = s.explore;
    this.go.disabled = !s.canControl || x.state === "running" || s.conn.status !== "live";
    this.stop.hidden = x.state !== "running";
    this.stop.disabled = !s.canControl;
    this.progress.hidden = x.state === "idle";
    if (x.state === "running") {
      // distinct states found so far, out of the limit (never above either)
      const max = x.maxStates || this.maxStates();
      if (max) {
        this.progress.max = max;
        this.progress.value = Math.min(x.states, max);
      } else this.progress.removeAttribute("value"); // indeterminate
      this.progressText.textContent = `${countText(x.states)} states${max ? ` of at most ${countText(max)}` : ""} · depth ${x.depth}`;
    } else if (x.state === "done") {
      this.progress.max = 1;
      this.progress.value = 1;
      this.progressText.textContent = "done";
    } else if (x.state === "cancelled") {
      this.progress.hidden = true;
      this.progressText.textContent = `cancelled after ${countText(x.states)} states`;
    } else this.progressText.textContent = "";
    if (x.result === this.shown) return;
    this.shown = x.result;
    const r = x.result;
    if (!r) {
      this.body.innerHTML = '<p class="muted small">Runs every interleaving of the actors\' micro-steps from this moment (the position shown, injected operations included) and lists the final states and the interleavings that violate a check.</p>';
      return;
    }
    const exp = r.expect;
    let html =
      `<p class="summary"><b>${countText(r.interleavings)}</b> interleavings · <b>${countText(r.states)}</b> states` +
      (r.cycles ? ` · ${r.cycles} cycles cut` : "") +
      (exp ? ` · expectations <b class="${exp.passed ? "ok-text" : "bad-text"}">${exp.passed ? "hold" : "fail"}</b>` : "") +
      `</p>` +
      (r.from_position ? `<p class="muted small from">from position ${countText(r.from_position)} (the moment explored; schedules start there)</p>` : "");
    const from = r.from_position || 0;
    const v = r.violations || [];
    if (v.length) {
      html += `<h3>Violations <span class="badge bad">${v.length}</span></h3><ul class="cex">`;
      v.forEach((c, i) => {
        html +=
          `<li class="bad-row"><b>${esc(c.check)}</b> · ipa ${esc(c.ipa)} · lost <b class="lostbits">${esc((c.bits || []).join(", ") || "—")}</b>` +
          ` · by ${esc(c.actor)}${c.op ? " " + esc(c.op) : ""}` +
          (c.before
            ? `<div class="muted small">already happened before position ${countText(from)}: every interleaving from here carries it</div></li>`
            : `<div class="sched" title="schedule">${schedHtml(c.schedule)}</div>` +
              `<button type="button" class="btn small primary" data-label="counterexample ${i + 1}" data-position="${from}" data-schedule='${esc(JSON.stringify(c.schedule || []))}'>open counterexample ▶</button></li>`);
      });
      html += `</ul>`;
    } else html += `<p class="ok-text small">No interleaving violates a check.</p>`;
    const fs = r.final_states || [];
    html += `<h3>Final states <span class="badge">${fs.length}</span></h3><table class="finals"><thead><tr><th>count</th><th>leaves</th><th></th></tr></thead><tbody>`;
    fs.forEach((f, i) => {
      const leaves = f.leaves
        ? Object.entries(f.leaves)
            .slice(0, 4)
            .map(([ipa, l]) => `<code>${esc(ipa)}</code> ${leafHtml(l)}`)
            .join("<br>") + (Object.keys(f.leaves).length > 4 ? `<br><span class="muted">+${Object.keys(f.leaves).length - 4} more</span>` : "")
        : (f.leaf_summary || []).map((l) => `${leafHtml(l)} ×${countText(l.count)}`).join("<br>");
      html +=
        `<tr><td class="num">${countText(f.count)}</td><td>${leaves}</td>` +
        (f.example_schedule_rle
          ? `<td><button type="button" class="btn small" disabled title="its example schedule is ${countText(f.example_schedule_rle.reduce((n, r) => n + r[1], 0))} steps (${esc(f.example_schedule_rle.map(([a, n]) => `${a}×${n}`).join(" → "))}): too long to open here; the CLI's bundle takes it">open ▶</button></td></tr>`
          : `<td><button type="button" class="btn small" data-label="final state ${i + 1}" data-position="${from}" data-schedule='${esc(JSON.stringify(f.example_schedule || []))}' title="open an example schedule that ends here">open ▶</button></td></tr>`);
    });
    html += `</tbody></table>`;
    if (exp && exp.results && exp.results.length) {
      html += `<h3>Expectations</h3><ul class="expect">` +
        exp.results.map((e) => `<li class="${e.held ? "ok-text" : "bad-text"}">${e.held ? "✓" : "✗"} ${esc(e.kind)} ${esc(expectText(e))}</li>`).join("") +
        `</ul>`;
    }
    this.body.innerHTML = html;
  }
}

/** "= [a, b] (found [a])", "= 0 (found 2)" (a cycles expectation), or the predicate. */
function expectText(e) {
  if (Array.isArray(e.expr)) return `= [${e.expr.join(", ")}]` + (e.found ? ` (found [${e.found.join(", ")}])` : "");
  return e.expr + (e.found !== undefined && e.found !== null && !e.held ? ` (found ${e.found})` : "");
}

function leafHtml(l) {
  return (
    `<span class="leaf">valid=${l.valid} <span class="${l.af ? "" : "warn-text"}">af=${l.af}</span> s2ap=${esc(l.s2ap)} dbm=${l.dbm}` +
    (l.pa ? ` pa=${esc(l.pa)}` : "") +
    `</span>`
  );
}

function schedHtml(s) {
  if (!s) return "";
  // compress runs: vcpu0×3 host0×4 …
  const out = [];
  for (const a of s) {
    const last = out[out.length - 1];
    if (last && last[0] === a) last[1] += 1;
    else out.push([a, 1]);
  }
  return out.map(([a, n]) => `${esc(a)}${n > 1 ? "×" + n : ""}`).join(" → ");
}
