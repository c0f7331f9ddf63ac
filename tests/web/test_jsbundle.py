"""The session page's modules in one script (ptviz/jsbundle.py)."""

import pytest

from ptviz.jsbundle import NotBundlable, bundle


def modules(tmp_path, **texts):
    for name, text in texts.items():
        (tmp_path / f"{name}.js").write_text(text)
    return tmp_path


def test_modules_are_evaluated_dependencies_first_each_once_returning_its_exports(tmp_path):
    root = modules(
        tmp_path,
        app='import { h } from "./dom.js";\nimport { num as n } from "./fmt.js";\nh(n);\n',
        fmt='import { h } from "./dom.js";\nexport function num(x) {\n  return h(x);\n}\n',
        dom="export const h = (x) => x;\nexport class El {}\nconst local = 1;\n",
    )
    text = bundle(root, "app.js")
    order = [text.index(f"// --- {m}.js") for m in ("dom", "fmt", "app")]
    assert order == sorted(order) and text.count("// --- dom.js") == 1
    assert "return { h, El };" in text and "return { num };" in text
    assert "const { num: n } = __module_fmt;" in text and "const { h } = __module_dom;" in text
    assert "export" not in text and "import" not in text


@pytest.mark.parametrize(
    "texts",
    [
        {"app": 'import { a } from "./b.js";\n', "b": 'import { c } from "./app.js";\n'},
        {"app": "export default 1;\n"},
        {"app": 'import * as b from "./b.js";\n', "b": "export const x = 1;\n"},
        {"app": 'const b = await import("./b.js");\n', "b": ""},
    ],
)
def test_what_the_bundle_does_not_know_is_refused(tmp_path, texts):
    with pytest.raises(NotBundlable):
        bundle(modules(tmp_path, **texts), "app.js")
