// The gallery's forms: the builder adds and removes mapped-range and actor rows (named
// map-N-* / actor-N-*; a new row takes a number no row has had, so the server reads the
// rows in order whatever was removed: ptviz/debugger/scenarios.py, row_numbers); a refused
// pasted scenario has the line its error names selected.
import { lineOf, selectLine } from "./source.js";

function setup(form) {
  const next = { map: 0, actor: 0 };
  for (const kind of ["map", "actor"]) {
    for (const tr of form.querySelectorAll(`#${kind}-rows tbody tr[data-row]`)) next[kind] = Math.max(next[kind], Number(tr.dataset.row) + 1);
  }
  form.addEventListener("click", (ev) => {
    const add = ev.target.closest("button.add-row");
    const remove = ev.target.closest("button.remove-row");
    if (add) {
      const kind = add.dataset.add;
      const n = next[kind]++;
      const html = document.getElementById(`new-${kind}-row`).innerHTML.replaceAll("__i__", String(n));
      const body = form.querySelector(`#${kind}-rows tbody`);
      body.insertAdjacentHTML("beforeend", html);
      body.lastElementChild.querySelector("input, select, textarea").focus();
    } else if (remove) {
      const tr = remove.closest("tr");
      const body = tr.parentElement;
      tr.remove();
      const focus = body.querySelector("button.remove-row") || form.querySelector("button.add-row");
      if (focus) focus.focus();
    }
  });
}

function showErrorLine() {
  const error = document.getElementById("scenario-error");
  const text = document.querySelector('textarea[name="scenario"]');
  if (!error || !text || !text.value || !text.closest("details[open]")) return;
  const line = lineOf(text.value, text.dataset.errorWhere);
  if (!line) return;
  error.append(` (line ${line} is selected below)`);
  selectLine(text, line);
}

// A refused form is answered at the POST target: show the gallery's own address (with the
// open section), so that a reload or a shared URL is the gallery, not a resubmission.
function galleryUrl() {
  if (!location.pathname.endsWith("/sessions/new")) return;
  const open = document.querySelector("details.section[open]");
  history.replaceState(null, "", "/" + (open && open.id ? `#${open.id}` : ""));
}

const form = document.getElementById("builder-form");
if (form) setup(form);
showErrorLine();
galleryUrl();
