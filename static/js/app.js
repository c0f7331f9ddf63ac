// ptviz debugger page: mounts the UI into <main id="app"> from the page's bootstrap JSON
// (<script id="bootstrap" type="application/json">) and speaks protocol v1 over the
// websocket (docs/protocol.md).
import { Api } from "./api.js";
import { BugReportMenu } from "./bugreport.js";
import { Connection } from "./conn.js";
import { big } from "./decode.js";
import { InjectPanel, Toolbar } from "./controls.js";
import { h, isTyping, rafThrottle } from "./dom.js";
import { ExplorePanel } from "./explore.js";
import { Help } from "./help.js";
import { Notices } from "./notify.js";
import { copyText, DescriptorPanel, MomentBar, momentUrl, PresencePanel } from "./moments.js";
import { SourcePanel } from "./source.js";
import { ActorsPanel, LockPanel, MachinePanel, ViolationsPanel } from "./panels.js";
import { Store } from "./store.js";
import { Timeline } from "./timeline.js";
import { Tree } from "./tree.js";

export function readBootstrap(doc = document) {
  const el = doc.getElementById("bootstrap");
  if (!el) throw new Error("ptviz: no <script id=\"bootstrap\"> on the page");
  return JSON.parse(el.textContent);
}

/**
 * Mount the debugger.
 * @param {HTMLElement} root  the <main id="app"> element
 * @param {object} boot       session, token, role, ws, name, kernel, protocol, actors, at, focus, notice, share
 * @param {object} opts       factory(url) -> WebSocket-like (the dev harness uses this)
 */
export function mount(root, boot, opts = {}) {
  const store = new Store(boot);
  const api = new Api(boot);
  const notices = new Notices();
  const help = new Help();
  let conn = null;
  let awaitingSnapshot = false;
  let subscribedThisConn = new Set();
  let focusedBoot = false; // the link's descriptor (boot.focus) was revealed
  let resolveMoment = null; // the answer to a "moment" command
  let namedThisConn = false;

  // --- commands ------------------------------------------------------------------------
  const fail = (err) => {
    if (!err || err.silent) return;
    // protocol errors are shown when the error message arrives (with actions); local
    // failures (not connected) are shown here.
    if (err.code === "disconnected") notices.error(err.code, err.message);
  };
  // Resolves with the ack, or with null when the command failed (the error is shown).
  const command = (cmd, fields = {}) => {
    if (!conn) return Promise.resolve(null);
    return conn.command(cmd, fields).catch((err) => {
      fail(err);
      return null;
    });
  };
  const needControl = () => {
    if (store.canControl) return true;
    notices.error("forbidden", "this is a view-only link: ask for a control link to take decisions");
    return false;
  };
  const navigate = (url, newTab) => {
    if (newTab) {
      const w = window.open(url, "_blank", "noopener");
      if (w) return;
    }
    window.location.assign(url);
  };
  const forkTo = async (fields, label, newTab = false) => {
    try {
      notices.info(`creating ${label}…`, 2500);
      const data = await api.fork(fields);
      const url = Api.linkOf(data);
      if (!url) throw Object.assign(new Error("the server answered without a link"), { code: "fork" });
      navigate(url, newTab);
      return url;
    } catch (err) {
      notices.error(err.code || "fork", `${label}: ${err.message}`);
      return null;
    }
  };

  const actions = {
    step(name) {
      if (!needControl()) return;
      if (store.past) return pastChoice("step", { actor: name }, `step ${name}`);
      command("step", { actor: name });
    },
    run(until) {
      if (!needControl() || store.running) return;
      const fields = until ? { ...toolbar.runParams(), until } : toolbar.runParams();
      if (store.past) return pastChoice("run", fields, "run");
      command("run", fields);
    },
    pause() {
      if (needControl()) command("pause");
    },
    togglePlay() {
      if (store.running) actions.pause();
      else actions.run();
    },
    speedChanged() {
      // a new run command replaces the running one's parameters
      if (store.running && store.canControl) command("run", toolbar.runParams());
    },
    // Time travel moves only this viewer's cursor (any role).
    back() {
      if (store.position > 0) command("back", { n: 1 });
    },
    forward() {
      if (store.rewound) command("seek", { position: store.position + 1 });
    },
    seek(position) {
      position = Math.max(0, Math.min(store.decisions, position));
      if (position !== store.position) command("seek", { position });
    },
    seekMoment(moment) {
      if (moment && (!store.cursor || moment !== store.cursor.moment)) command("seek", { moment });
    },
    live() {
      if (store.past) command("live");
    },
    // A link that opens exactly here (a view link, the moment, its state hash; optionally
    // a descriptor selected), copied to the clipboard and shown.
    async copyMomentLink(addr = null, moment = null) {
      let url;
      if (moment) url = momentUrl(boot, moment, null, addr);
      else {
        const reply = new Promise((resolve) => (resolveMoment = resolve));
        if (!(await command("moment"))) return;
        const m = await reply;
        url = momentUrl(boot, m.moment, m.hash, addr);
      }
      const ok = await copyText(url);
      notices.show({ kind: "ok", code: "link", message: `${ok ? "copied" : "link"}: ${url}`, timeout: 8000 });
      return url;
    },
    setName(name) {
      command("hello", { name });
    },
    follow(id) {
      command("follow", { viewer: id });
    },
    history(addr) {
      if (addr) command("history", { addr });
    },
    forkHere() {
      const branch = store.cursor ? store.cursor.branch : 0;
      forkTo({ position: store.position, branch }, `fork at ${store.cursor ? "moment " + store.cursor.moment : "position " + store.position}`);
    },
    compare(fields, newTab) {
      forkTo(fields, `copy with kernel ${fields.kernel}, HA ${fields.ha ? 1 : 0}, HD ${fields.hd ? 1 : 0}`, newTab);
    },
    explore() {
      if (!needControl() || store.explore.state === "running") return;
      const max = explorePanel.maxStates();
      store.explore = { state: "running", states: 0, depth: 0, maxStates: max ?? null, result: null };
      store.emit({ explore: true });
      command("explore", max ? { max_states: max } : {}).then((ok) => {
        if (!ok && store.explore.state === "running") {
          store.explore.state = "idle";
          store.emit({ explore: true });
        }
      });
    },
    exploreCancel() {
      if (needControl() && store.explore.state === "running") command("explore_cancel");
    },
    openSchedule(schedule, label, position) {
      // an exploration's schedules start at the moment it explored from
      forkTo(position ? { schedule, position } : { schedule }, label || "counterexample");
    },
    inject(actor, op) {
      if (!needControl()) return;
      if (store.past) return pastChoice("inject", { actor, op }, `inject "${op}" on ${actor}`);
      command("inject", { actor, op }).then((ok) => ok && notices.info(`queued "${op}" on ${actor}`, 2500));
    },
    async link(role) {
      try {
        const data = await api.link(role);
        const url = Api.linkOf(data);
        if (!url) throw Object.assign(new Error("the server answered without a link"), { code: "links" });
        toolbar.showLink(toolbar.shareOut, `${role} link`, url);
      } catch (err) {
        notices.error(err.code || "links", `${role} link: ${err.message}`);
      }
    },
    reconnect() {
      conn && conn.retryNow();
    },
    help() {
      help.toggle();
    },
    recordingUrl() {
      return api.recordingUrl();
    },
  };

  // A decision while looking at the past: the controller chooses where it goes (nothing
  // the others look at moves without their action).
  function pastChoice(cmd, fields, what) {
    notices.show({
      code: "rewound",
      kind: "error",
      message: `you are looking at moment ${store.cursor.moment}, not the head (${store.head ? store.head.moment : "?"}): ${what} where?`,
      actions: [
        { label: "continue here on a new branch", run: () => command(cmd, { ...fields, branch: true }) },
        { label: "fork a new session here", run: () => actions.forkHere() },
      ],
    });
  }

  // --- components ----------------------------------------------------------------------
  const source = new SourcePanel(boot, {
    async rerun(text) {
      const data = await api.fork({ scenario: text }); // rejects with the server's message
      const url = Api.linkOf(data);
      if (!url) throw Object.assign(new Error("the server answered without a link"), { code: "fork" });
      navigate(url);
    },
  });
  const toolbar = new Toolbar(store, actions);
  const bugReport = new BugReportMenu(store, api);
  toolbar.share.before(bugReport.el);
  const tree = new Tree(store, {
    toggle(pa, open) {
      setExpanded(pa, open);
    },
    pick(row, item) {
      inject.pick(row, item);
    },
    select(it) {
      if (it && it.t === "row") command("focus", { addr: it.key });
      descriptor.render();
    },
    link(row) {
      actions.copyMomentLink(row.addr);
    },
  });
  const momentBar = new MomentBar(store, actions);
  const presence = new PresencePanel(store, actions);
  const descriptor = new DescriptorPanel(store, actions, boot);
  const machine = new MachinePanel(store);
  const lock = new LockPanel(store);
  const actorsPanel = new ActorsPanel(store, { step: actions.step });
  const violations = new ViolationsPanel(store, {
    open(v) {
      const e = store.events.find((x) => x.seq === v.seq);
      if (e) {
        timeline.selectSeq(e.seq, false);
        if (e.addr) tree.revealDescriptor(e.addr, e.ipa, e.level);
      } else notices.info(`event #${v.seq} is older than the events kept in this view`);
    },
  });
  const inject = new InjectPanel(store, actions);
  const explorePanel = new ExplorePanel(store, actions);
  const timeline = new Timeline(store, {
    // A click on an event moves this viewer's cursor right after it.
    select(e) {
      if (e.addr) tree.revealDescriptor(e.addr, e.ipa, e.level);
      if (e.moment) actions.seekMoment(e.moment);
    },
    boot,
    goto(moment) {
      actions.seekMoment(moment);
    },
    copy(moment) {
      actions.copyMomentLink(null, moment);
    },
  });

  const treePanel = h("section", { class: "panel tree-panel", "aria-label": "Stage-2 tables" },
    h("div", { class: "panel-head" },
      h("h2", null, "Stage-2 tables"),
      h("span", { class: "legend small" },
        h("span", { class: "lg chg" }, "changed"),
        h("span", { class: "lg lost" }, "lost bits"),
        h("span", { class: "muted" }, "▸ expand = subscribe · click a row = use its IPA"))),
    tree.el,
    inject.el);
  const side = h("div", { class: "side" }, presence.el, descriptor.el, machine.el, lock.el, violations.el, actorsPanel.el, explorePanel.el);
  const head = h("header", { class: "ptviz-head" },
    h("a", { class: "brand", href: "/", title: "All scenarios" }, "ptviz"),
    h("span", { class: "sess-name", title: boot.name || "" }, boot.name || "session"),
    h("span", { class: "kernel-tag", title: "kernel generation the host actors run" }, boot.kernel || ""),
    boot.parent ? h("span", { class: "muted small", title: `forked from session ${boot.parent}` }, "fork") : null,
    h("span", { class: "desc muted", title: boot.description || "" }, (boot.description || "").replace(/\s+/g, " ").trim()),
    h("button", { type: "button", class: "btn small source-btn", title: "The scenario's source: read it, edit it and re-run it as a new session", onclick: () => source.toggle() }, "scenario"),
    h("a", { class: "small", href: "/docs/protocol", target: "_blank", rel: "noopener" }, "protocol"),
  );
  const app = h("div", { class: "ptviz" },
    head,
    toolbar.el,
    h("div", { class: "msgs" }, momentBar.el),
    h("div", { class: "work" }, treePanel, side, notices.el),
    timeline.el,
    help.el,
    source.el);
  root.replaceChildren(app);
  root.classList.add("ptviz-root");
  // Fill the viewport below whatever header the server renders above <main>.
  const fit = () => app.style.setProperty("--app-top", Math.max(0, root.getBoundingClientRect().top + window.scrollY) + "px");
  requestAnimationFrame(fit); // (before the first paint; now, it forced a layout of the empty app)
  window.addEventListener("resize", fit);

  // --- subscriptions -------------------------------------------------------------------
  function rootPa() {
    return store.machine ? store.machine.root.toLowerCase() : null;
  }

  function subscribe(list) {
    const fresh = list.filter((pa) => !subscribedThisConn.has(pa));
    if (!fresh.length || !conn || !conn.open) return;
    for (const pa of fresh) subscribedThisConn.add(pa);
    command("subscribe", { tables: fresh });
  }

  function unsubscribe(list) {
    if (!list.length) return;
    for (const pa of list) subscribedThisConn.delete(pa);
    if (conn && conn.open) command("unsubscribe", { tables: list });
  }

  function descendants(pa) {
    // open tables below `pa` (collapsing a table closes its open subtree)
    const out = [];
    const view = store.tableOf(pa);
    if (!view) return out;
    for (const r of view.rows) {
      const d = r.decoded;
      if (d.type === "table") {
        const next = d.next_table.toLowerCase();
        if (store.expanded.has(next)) out.push(next, ...descendants(next));
      }
    }
    return out;
  }

  function setExpanded(pa, open) {
    if (open) {
      store.expanded.add(pa);
      subscribe([pa]);
    } else {
      const gone = [pa, ...descendants(pa)];
      for (const x of gone) store.expanded.delete(x);
      store.mergeTables(Object.fromEntries(gone.map((x) => [x, null])));
      unsubscribe(gone);
    }
    tree.rebuild();
  }

  // Small scenarios open fully on first sight (each table once: a collapse sticks).
  const AUTO_EXPAND_LEAVES = 64;
  const autoSeen = new Set();
  function autoExpand() {
    const m = store.machine;
    if (!m || !m.counts || m.counts.leaves > AUTO_EXPAND_LEAVES) return;
    const open = [];
    for (const [pa, view] of store.tables) {
      if (pa !== rootPa() && !store.expanded.has(pa)) continue;
      for (const r of view.rows) {
        if (r.decoded.type !== "table") continue;
        const next = r.decoded.next_table.toLowerCase();
        if (autoSeen.has(next)) continue;
        autoSeen.add(next);
        if (!store.expanded.has(next)) open.push(next);
      }
    }
    for (const pa of open) store.expanded.add(pa);
    if (open.length) {
      subscribe(open);
      mark("tables");
    }
  }

  // A link's descriptor (`d`): open the tables down to it and select it. Its IPA and
  // level come from its row (or a recent event naming it); when neither is here yet,
  // the table holding it is asked for (a table is one 4K page, except the start level's
  // concatenated ones), whose answer carries the row: opening a link to a leaf of a
  // fresh session costs two round trips, not a search of the tree.
  function focusBoot() {
    if (!boot.focus || focusedBoot || !store.machine) return;
    const addr = boot.focus.toLowerCase();
    const hit = store.rowsByAddr.get(addr);
    const e = hit ? null : store.events.findLast((x) => x.addr === addr);
    if (hit || e) {
      focusedBoot = true;
      tree.revealDescriptor(addr, hit ? hit.row.ipa : e.ipa, hit ? hit.row.decoded.level : e.level);
      store.selectedAddr = addr;
      return;
    }
    const root = big(store.machine.root);
    const a = big(addr);
    if (a >= root && a < root + BigInt(8 * store.machine.start_entries)) return; // (its row comes with the root)
    subscribe(["0x" + (a & ~0xfffn).toString(16)]); // (once per connection)
  }

  function ensureSubscriptions() {
    const want = [];
    const r = rootPa();
    if (r) want.push(r);
    for (const pa of store.expanded) want.push(pa);
    subscribe(want);
  }

  // --- rendering -----------------------------------------------------------------------
  const dirty = new Set();
  const flush = rafThrottle(() => {
    const all = dirty.has("all");
    if (all || dirty.has("tables")) tree.rebuild(all);
    else if (dirty.has("tree")) tree.paint();
    if (all || dirty.has("machine") || dirty.has("tables")) machine.render();
    if (all || dirty.has("actors")) {
      actorsPanel.render();
      lock.render();
    }
    if (all || dirty.has("events") || dirty.has("actors")) timeline.render();
    violations.render();
    inject.render();
    explorePanel.render();
    toolbar.render();
    momentBar.render();
    presence.render();
    descriptor.render();
    if (!store.past) notices.removeCode("rewound");
    bugReport.render();
    dirty.clear();
  });
  const mark = (...what) => {
    for (const w of what) dirty.add(w);
    flush();
  };

  store.addEventListener("change", (ev) => {
    const d = ev.detail || {};
    if (d.snapshot) mark("all");
    if (d.tables) {
      mark("tables");
      autoExpand();
      focusBoot();
    }
    if (d.actors) mark("actors");
    if (d.events) mark("events");
    if (d.machine) mark("machine");
    if (d.conn) mark("actors");
    if (d.conn || d.explore || d.hello || d.head || d.presence) mark("toolbar");
    if (d.focus) {
      // following a presenter: select what they selected
      const addr = d.focus.addr;
      if (addr) {
        const e = store.events.findLast((x) => x.addr === addr);
        const hit = store.rowsByAddr.get(addr);
        tree.revealDescriptor(addr, hit ? hit.row.ipa : e?.ipa, hit ? hit.row.decoded.level : e?.level);
        store.selectedAddr = addr;
        mark("tree");
      }
    }
    if (d.moment && resolveMoment) resolveMoment(d.moment);
    if (d.history) descriptor.show(d.history);
    if (d.snapshot || d.head) keepPlace();
  });

  // A reconnect (a restarted server or worker, a dropped network) and a reload reopen
  // this viewer where its cursor is now, not where its link first pointed: the socket
  // URL and the address bar follow the cursor (history is append-only, so a moment id
  // names the same node forever; the hash is left out, the server re-verifies on replay).
  const wsBase = boot.ws.replace(/&(at|h|d)=[^&]*/g, "");
  let place = null;
  function keepPlace() {
    const at = store.past ? String(store.cursor.moment) : "";
    if (at === place) return;
    place = at;
    conn.setUrl(at ? `${wsBase}&at=${encodeURIComponent(at)}` : wsBase);
    const url = new URL(location.href);
    const named = url.searchParams.get("at") || url.searchParams.get("step") || "";
    if (named === at) return; // (the link's own words, its hash kept)
    for (const k of ["at", "h", "step"]) url.searchParams.delete(k);
    if (at) url.searchParams.set("at", at);
    history.replaceState(history.state, "", url);
  }

  // The flash fades by CSS; repaint once it is over so late rows get the settled style.
  setInterval(() => {
    if (document.visibilityState === "visible") tree.paint();
  }, 2000);

  // --- messages ------------------------------------------------------------------------
  function onMessage(msg) {
    if (!msg || msg.v !== 1) {
      notices.error("bad_message", "the server sent a message without \"v\": 1");
      return;
    }
    switch (msg.type) {
      case "hello":
        namedThisConn = false;
        store.hello(msg);
        subscribedThisConn = new Set();
        awaitingSnapshot = true; // a snapshot follows hello
        ensureSubscriptions();
        break;
      case "snapshot": {
        awaitingSnapshot = false;
        // This viewer's own snapshot (`you`) carries the tables it is subscribed to: with
        // them those a link's descriptor opened (docs/protocol.md, `d`).
        if (msg.you) for (const pa of Object.keys(msg.tables || {})) subscribedThisConn.add(pa.toLowerCase());
        store.snapshot(msg);
        ensureSubscriptions();
        if (msg.notice) notices.error("no_moment", msg.notice);
        focusBoot();
        if (!namedThisConn) {
          namedThisConn = true;
          const name = localStorage.getItem("ptviz.name");
          if (name) command("hello", { name });
        }
        break;
      }
      case "delta":
        if (awaitingSnapshot) break;
        if (!store.delta(msg)) {
          awaitingSnapshot = true;
          conn.send({ type: "resync" });
          notices.info(`missed delta batches (${store.batch + 1}…${msg.batch - 1}): resyncing`, 2500);
        }
        break;
      case "tables": // the answer to this viewer's subscribe (not numbered)
        if (!awaitingSnapshot) store.tablesSent(msg);
        break;
      case "ack":
        break;
      case "error":
        showError(msg);
        break;
      case "explore_progress":
        store.exploreProgress(msg);
        break;
      case "explore_result":
        store.exploreResult(msg);
        break;
      case "head": // the head moved on while this viewer looks at another moment
      case "tables": // tables at this viewer's moment (it is not following the head)
      case "presence":
      case "focus":
      case "moment":
        store.moments(msg);
        break;
      case "explore_cancelled":
        store.exploreCancelled(msg);
        break;
      default:
        notices.error("bad_message", `unknown message type "${msg.type}"`);
    }
  }

  function showError(msg) {
    const actionsFor = [];
    if (msg.code === "rewound") actionsFor.push({ label: "fork here", run: () => actions.forkHere() });
    if (msg.code === "unavailable") actionsFor.push({ label: "resync", run: () => conn.send({ type: "resync" }) });
    if (msg.cmd === "explore" || msg.code === "too_big") {
      store.explore.state = "idle";
      store.emit({ explore: true });
    }
    notices.error(msg.code || "error", msg.message || "(no message)", actionsFor);
  }

  conn = new Connection(boot.ws, {
    onMessage,
    onStatus(status, detail) {
      if (status !== "live") awaitingSnapshot = true;
      store.setConn(status, detail);
    },
    factory: opts.factory,
  });

  // --- keyboard ------------------------------------------------------------------------
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      if (help.open) help.close();
      else if (source.open) source.close();
      else {
        let closed = false;
        for (const d of app.querySelectorAll("details.menu[open]")) {
          d.open = false;
          d.querySelector("summary").focus();
          closed = true;
        }
        if (!closed) notices.clear();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (isTyping(t)) return;
    const inWidget = t instanceof Element && (t.matches("input, select, summary") || t.closest("details.menu[open]"));
    const onButton = t instanceof Element && t.matches("button, a, summary");
    let handled = true;
    const k = ev.key;
    if (k >= "1" && k <= "9") {
      const name = store.actorNames()[Number(k) - 1];
      if (name) actions.step(name);
      else handled = false;
    } else if (k === "r") actions.run();
    else if (k === "p") actions.pause();
    else if (k === " " && !onButton && !inWidget) actions.togglePlay();
    else if (k === "b" || (k === "ArrowLeft" && !inWidget)) actions.back();
    else if (k === "f" || (k === "ArrowRight" && !inWidget)) actions.forward();
    else if (k === "Home" && !inWidget) actions.seek(0);
    else if (k === "End" && !inWidget) actions.live();
    else if (k === "k") actions.forkHere();
    else if (k === "c") actions.copyMomentLink();
    else if (k === "e") actions.explore();
    else if (k === "i") {
      if (inject.ipa.disabled) inject.actor.focus();
      else {
        inject.ipa.focus();
        inject.ipa.select(); // typing replaces the picked address, never appends to it
      }
    }
    else if (k === "t") tree.el.focus();
    else if (k === "l") timeline.scroller.focus();
    else if (k === "?") help.toggle();
    else handled = false;
    if (handled) ev.preventDefault();
  });

  mark("all");
  conn.connect();
  return { store, conn, tree, timeline, notices, actions };
}

if (!window.PTVIZ_NO_AUTOMOUNT) {
  const start = () => {
    const root = document.getElementById("app");
    if (!root || !document.getElementById("bootstrap")) return;
    try {
      window.ptviz = mount(root, readBootstrap());
    } catch (err) {
      root.textContent = `ptviz could not start: ${err.message}`;
      console.error(err);
    }
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}
