// Inline SVG icons (no icon font: every glyph renders the same in any browser/font set).
const svg = (body, vb = "0 0 16 16") =>
  `<svg class="ico" viewBox="${vb}" width="14" height="14" aria-hidden="true" focusable="false">${body}</svg>`;

export const ICONS = {
  start: svg('<path d="M3 2h2v12H3zM14 2v12L6 8z" fill="currentColor"/>'),
  end: svg('<path d="M11 2h2v12h-2zM2 2v12l8-6z" fill="currentColor"/>'),
  back: svg('<path d="M12 2v12L4 8z" fill="currentColor"/>'),
  fwd: svg('<path d="M4 2v12l8-6z" fill="currentColor"/>'),
  play: svg('<path d="M4 2v12l10-6z" fill="currentColor"/>'),
  pause: svg('<path d="M3 2h4v12H3zM9 2h4v12H9z" fill="currentColor"/>'),
  fork: svg('<circle cx="4" cy="3" r="2" fill="none" stroke="currentColor" stroke-width="1.6"/><circle cx="12" cy="3" r="2" fill="none" stroke="currentColor" stroke-width="1.6"/><circle cx="4" cy="13" r="2" fill="none" stroke="currentColor" stroke-width="1.6"/><path d="M4 5v6M12 5c0 4-8 2-8 6" fill="none" stroke="currentColor" stroke-width="1.6"/>'),
  explore: svg('<path d="M8 1v3M8 12v3M1 8h3M12 8h3M3 3l2 2M11 11l2 2M13 3l-2 2M5 11l-2 2" stroke="currentColor" stroke-width="1.6"/><circle cx="8" cy="8" r="2.5" fill="currentColor"/>'),
  compare: svg('<path d="M2 5h10l-3-3M14 11H4l3 3" fill="none" stroke="currentColor" stroke-width="1.6"/>'),
  share: svg('<circle cx="12" cy="3" r="2" fill="currentColor"/><circle cx="4" cy="8" r="2" fill="currentColor"/><circle cx="12" cy="13" r="2" fill="currentColor"/><path d="M12 3L4 8l8 5" fill="none" stroke="currentColor" stroke-width="1.5"/>'),
  download: svg('<path d="M8 2v8M4 7l4 4 4-4M2 14h12" fill="none" stroke="currentColor" stroke-width="1.7"/>'),
  lock: svg('<rect x="3" y="7" width="10" height="8" rx="1" fill="currentColor"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.6"/>'),
  unlock: svg('<rect x="3" y="7" width="10" height="8" rx="1" fill="none" stroke="currentColor" stroke-width="1.4"/><path d="M5 7V5a3 3 0 0 1 6 0" fill="none" stroke="currentColor" stroke-width="1.4"/>'),
};

/** A button label: icon + text, as a DocumentFragment-ready HTML string. */
export function label(icon, text) {
  return ICONS[icon] + (text ? `<span>${text}</span>` : "");
}
