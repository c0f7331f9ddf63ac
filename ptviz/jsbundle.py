"""One script for the session page instead of its twenty-odd ES modules.

A cold page load fetched, parsed and linked every module app.js imports: 22 requests
through the one server process while the engine worker loads the session on the same
two cores. The bundle is made here, at serve time, with the standard library (the
project has no JS build step): each module becomes a function scope evaluated once, in
the order ES modules evaluate (dependencies first), that returns its exports; its imports
become reads of those. The modules are written for it: named imports from "./x.js" and
`export` on function, class, const and let declarations only (anything else is refused,
and the page goes on loading the modules one by one).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("ptviz")
ENTRY = "app.js"  # the session page's module
PATH = "js/app.bundle.js"  # the bundle's path under STATIC_URL

IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([\w-]+)\.js";?[ \t]*$', re.M)
EXPORT = re.compile(r"^export\s+((?:async\s+)?function\*?|class|const|let)\s+([\w$]+)", re.M)
ANY_MODULE_SYNTAX = re.compile(r"^\s*(import|export)\b|\bimport\s*\(|\bimport\.meta\b", re.M)


class NotBundlable(Exception):
    pass


def _scope(name: str) -> str:
    return "__module_" + re.sub(r"\W", "_", name)


def _bindings(names: str) -> str:
    """`{ a, b as c }` (an import's names) as a destructuring pattern: `{ a, b: c }`."""
    out = []
    for item in names.split(","):
        parts = item.split()
        if not parts:
            continue
        if len(parts) == 3 and parts[1] == "as":
            out.append(f"{parts[0]}: {parts[2]}")
        elif len(parts) == 1:
            out.append(parts[0])
        else:
            raise NotBundlable(f"import of {item.strip()!r}")
    return "{ " + ", ".join(out) + " }"


def bundle(root: Path, entry: str) -> str:
    """The modules `entry` (a file name in `root`) imports, directly or not, and `entry`
    itself, as one module's text."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise NotBundlable("an import cycle: " + " -> ".join([*visiting, name]))
        visiting.append(name)
        for _, dep in IMPORT.findall((root / f"{name}.js").read_text()):
            visit(dep)
        visiting.pop()
        order.append(name)

    visit(entry.removesuffix(".js"))
    parts = [f"// ptviz: {len(order)} modules of static/js in one (ptviz/jsbundle.py)"]
    for name in order:
        text = (root / f"{name}.js").read_text()
        body = IMPORT.sub(lambda m: f"const {_bindings(m.group(1))} = {_scope(m.group(2))};", text)
        exported = [m.group(2) for m in EXPORT.finditer(body)]
        body = EXPORT.sub(lambda m: f"{m.group(1)} {m.group(2)}", body)
        if ANY_MODULE_SYNTAX.search(body):
            raise NotBundlable(f"{name}.js has import or export syntax the bundle does not know")
        parts.append(
            f"const {_scope(name)} = (() => {{\n// --- {name}.js\n{body}\n"
            f"return {{ {', '.join(exported)} }};\n}})();"
        )
    return "\n".join(parts) + "\n"


_made: dict[tuple, str | None] = {}


def cached(root: Path, entry: str) -> str | None:
    """bundle(root, entry), made again only when a module changed; None when the
    modules cannot be bundled (the page loads them as modules)."""
    files = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in root.glob("*.js"))
    key = (str(root), entry, files)
    if key not in _made:
        try:
            text = bundle(root, entry)
        except (NotBundlable, OSError) as exc:
            log.warning("static/js is served as modules, not bundled: %s", exc)
            text = None
        _made.clear()
        _made[key] = text
    return _made[key]


def js_root() -> Path:
    from django.conf import settings

    return Path(settings.STATICFILES_DIRS[0]) / "js"


def app_bundle() -> str | None:
    """The session page's bundle (None: it loads app.js and its modules)."""
    return cached(js_root(), ENTRY)
