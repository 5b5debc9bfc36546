"""Notebook display: the HTML tree of a model, the table of a ``ps``/``st`` tree, the
``summary`` reprs, and the IPython extension. The HTML is parsed with ``html.parser``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_display import _Gated, _Hyper

import lux_torch as lux
from lux_torch import display
from lux_torch.display import layer_html, short_repr, tree_table

MONOSPACE = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace'

# -------------------------------------------------------------------------- a tiny DOM

_VOID = {"br", "hr", "img", "input", "meta", "link", "col", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, pred: Any) -> list[Node]:
        out = [self] if pred(self) else []
        for c in self.children:
            if isinstance(c, Node):
                out += c.find_all(pred)
        return out

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def style(self) -> str:
        return self.attrs.get("style", "")


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack[-1].tag != "style":
            self.stack[-1].children.append(data)


def parse(markup: str) -> Node:
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def by_class(node: Node, cls: str) -> list[Node]:
    return node.find_all(lambda n: cls in n.classes())


def root_style(markup: str) -> str:
    """The inline style of the outermost element (decoded, as a browser reads it)."""
    (root,) = [c for c in parse(markup).children if isinstance(c, Node)]
    return root.style()


def number(text: str) -> int:
    text = text.replace("\xa0", "").strip()
    return int(text.replace(",", "")) if text else 0


def own_cell(row: Node, cls: str) -> Node:
    """The count cell ``cls`` of a row (of a summary line: not those of nested rows)."""
    line = row.children[0] if row.tag == "details" else row
    assert isinstance(line, Node)
    (cell,) = [c for c in line.children if isinstance(c, Node) and cls in c.classes()]
    return cell


def counts(row: Node) -> tuple[int, int]:
    return number(own_cell(row, "lux-p").text()), number(own_cell(row, "lux-s").text())


# -------------------------------------------------------------------------- model tree


def _containers(layer: lux.Layer) -> int:
    return bool(layer.children()) + sum(_containers(c) for c in layer.children().values())


def _nested() -> lux.Layer:
    return lux.Chain(
        encoder=lux.Chain(lux.Linear(4, 8, activation=torch.relu), lux.Dropout(0.2)),
        mid=lux.Chain(lux.Linear(8, 8), lux.Chain(lux.Linear(8, 8), lux.LayerNorm((8,)))),
        head=lux.Linear(8, 2),
    )


def test_a_model_renders_as_a_tree_of_details() -> None:
    model = _nested()
    page = parse(model._repr_html_())
    details = page.find_all(lambda n: n.tag == "details")
    assert len(details) == _containers(model) == 4  # one per container, the root included
    for d in details:
        first = d.children[0]
        assert isinstance(first, Node) and first.tag == "summary"
    summaries = [d.children[0].text() for d in details]  # type: ignore[union-attr]
    assert summaries[0].endswith("Chain") and "encoder = Chain" in summaries[1]
    # a layer without children is one line: its name and its one-line repr
    leaves = [r.text() for r in page.find_all(lambda n: n.attrs.get("data-kind") == "leaf")]
    assert any(t.endswith("layer_1 = Linear(4 => 8, relu)") for t in leaves)
    assert any(t.endswith("head = Linear(8 => 2)") for t in leaves)
    assert len(leaves) == 6
    # nesting follows the model: the LayerNorm sits inside mid's inner Chain
    inner = details[3]
    assert "layer_2 = LayerNorm((8,))" in inner.text() and "head" not in inner.text()


def test_the_font_is_monospace_and_the_colours_follow_the_theme() -> None:
    markup = _nested()._repr_html_()
    (root,) = [c for c in parse(markup).children if isinstance(c, Node)]
    assert f"font-family: {MONOSPACE}" in root.style()
    assert "color: inherit" in root.style()
    # no hard-coded colour: text inherits, borders and shades are translucent greys
    styles = " ".join(n.style() for n in parse(markup).find_all(lambda n: True))
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b|\bblack\b|\bwhite\b(?!-)|rgb\(", styles)
    assert "rgba(128, 128, 128" in styles
    # <details>/<summary> drawn as the browser draws them, even where the page's stylesheet
    # restyles them (mkdocs-material draws them as coloured admonition boxes)
    for d in parse(markup).find_all(lambda n: n.tag == "details"):
        summary = d.children[0]
        assert isinstance(summary, Node)
        assert "display: block" in d.style() and "border: none" in d.style()
        assert "display: list-item" in summary.style() and "background: transparent" in (
            summary.style()
        )
    assert "summary::before" in markup and "content: none !important" in markup


def test_the_count_columns_line_up() -> None:
    """Every line (header, layers, own tensors, total) ends with the same two cells: the
    same inline style, floated to the right edge of the block, so the columns align
    whatever the nesting depth."""
    page = parse(_nested()._repr_html_())
    head = by_class(page, "lux-head")[0]
    reference = own_cell(head, "lux-p").style()
    assert "float: right" in reference and "min-width" in reference
    lines = page.find_all(lambda n: n.attrs.get("data-kind") in ("leaf", "own", "total"))
    assert len(lines) == 7
    for line in lines:
        assert own_cell(line, "lux-p").style() == reference
        assert own_cell(line, "lux-s").style() == reference


def _check_sums(model: lux.Layer, total: tuple[int, int]) -> Node:
    """The leaf and own-tensor rows (tied parameters once) add up to the total shown, and
    every collapsed container's subtotal to its rows."""
    page = parse(model._repr_html_())
    (total_row,) = page.find_all(lambda n: n.attrs.get("data-kind") == "total")
    assert counts(total_row) == total

    def rows_sum(node: Node) -> tuple[int, int]:
        rows = node.find_all(lambda n: n.attrs.get("data-kind") in ("leaf", "own"))
        p = sum(counts(r)[0] - int(r.attrs.get("data-tied", "0")) for r in rows)
        return p, sum(counts(r)[1] for r in rows)

    assert rows_sum(page) == total
    for d in page.find_all(lambda n: n.tag == "details")[1:]:  # the root shows no subtotal
        assert counts(d) == rows_sum(d)
    return page


def test_row_counts_add_up_to_the_total() -> None:
    _check_sums(_nested(), (4 * 8 + 8 + 8 * 8 + 8 + 8 * 8 + 8 + 16 + 8 * 2 + 2, 2))
    big = lux.Chain(lux.Linear(2, 64), *[lux.Linear(64, 64)] * 8, lux.Linear(64, 1))
    page = _check_sums(big, (192 + 8 * 4160 + 65, 0))
    assert "4,160 × 8" in page.text()  # the run of 8 identical layers, as in the printout


def test_a_hypernetwork_and_a_container_with_own_tensors_add_up() -> None:
    page = _check_sums(_Hyper(lux.Linear(1, 12), lux.Linear(3, 3)), (24, 0))
    (target,) = [r for r in by_class(page, "lux-row") if "target = " in r.text()]
    assert counts(target) == (0, 0)  # generated by the hypernetwork: not counted twice
    page = _check_sums(lux.Chain(_Gated(lux.Linear(3, 3)), lux.Linear(3, 3)), (27, 0))
    (own,) = page.find_all(lambda n: n.attrs.get("data-kind") == "own")
    assert counts(own) == (3, 0) and "(own tensors)" in own.text()


def test_shared_groups_are_marked_and_counted_once() -> None:
    chain = lux.Chain(lux.Linear(3, 3), lux.Linear(3, 3), lux.Linear(3, 3))
    model, _ = lux.share_parameters(chain, lux.init_params(0, chain), [("layer_1", "layer_2")])
    page = _check_sums(model, (24, 0))
    (tied,) = [r for r in by_class(page, "lux-row") if "tied to" in r.text()]
    assert "layer_2 = Linear(3 => 3)" in tied.text() and "tied to layer_1" in tied.text()
    assert tied.attrs["data-tied"] == "12"
    weights = lux.experimental.Shared(chain, [("layer_1.weight", "layer_3.weight")])
    page = _check_sums(weights, (27, 0))
    (tied,) = [r for r in by_class(page, "lux-row") if "tied to" in r.text()]
    assert "weight tied to layer_1.weight" in tied.text() and tied.attrs["data-tied"] == "9"


def test_a_large_model_opens_level_by_level() -> None:
    block = lux.Chain(lux.Linear(8, 8), lux.LayerNorm((8,)), lux.Chain(lux.Linear(8, 8)))
    small = parse(lux.Chain(block, block)._repr_html_())
    assert all("open" in d.attrs for d in small.find_all(lambda n: n.tag == "details"))
    page = parse(lux.Chain(*[block] * 30)._repr_html_())
    details = page.find_all(lambda n: n.tag == "details")
    assert "open" in details[0].attrs  # the root
    closed = [d for d in details if "open" not in d.attrs]
    assert len(closed) == 30 + 30  # the 30 blocks (and the chains inside them)
    assert all(counts(d) == (72 + 16 + 72, 0) for d in closed[::2])  # each with its subtotal
    # a whole level opens while the lines shown stay within 40: here the root's and the
    # blocks' (1 + 9 + 3 * 8 lines), not the inner chains' (8 more)
    eight = parse(lux.Chain(*[block] * 8, lux.Linear(8, 8))._repr_html_())
    opened = [d for d in eight.find_all(lambda n: n.tag == "details") if "open" in d.attrs]
    assert len(opened) == 1 + 8 and all(counts(d)[0] == 160 for d in opened[1:])


class _Tagged(lux.Layer):
    """A custom layer whose configuration is a user string."""

    tag: str

    def init_params(self, key: torch.Tensor) -> dict[str, Any]:
        return {"w": torch.zeros(2)}

    def __call__(self, x: Any, ps: dict[str, Any], st: dict[str, Any]) -> tuple[Any, Any]:
        return x * ps["w"], st


def test_user_strings_are_escaped() -> None:
    evil = "<script>alert('x')</script>"
    model = lux.Chain(**{evil: _Tagged(evil), "ok": lux.Chain(_Tagged("a&b"))})
    markup = model._repr_html_()
    assert "<script>" not in markup and "alert(&#x27;x&#x27;)" in markup
    page = parse(markup)
    assert not page.find_all(lambda n: n.tag == "script")
    (row,) = [r for r in by_class(page, "lux-row") if "Tagged(tag=" in r.text() and "<" in r.text()]
    assert row.text().endswith(f"{evil} = {short_repr(_Tagged(evil))}")
    assert "a&b" in page.text()
    leaf = parse(_Tagged(evil)._repr_html_())
    assert not leaf.find_all(lambda n: n.tag == "script") and evil in leaf.text()


def test_a_layer_without_children_is_one_line() -> None:
    page = parse(layer_html(lux.Linear(2, 3)))
    (row,) = page.find_all(lambda n: n.attrs.get("data-kind") == "leaf")
    assert row.text().endswith("Linear(2 => 3)") and counts(row) == (9, 0)
    assert not page.find_all(lambda n: n.tag == "details")


# -------------------------------------------------------------------------- tree table

_VALUE = 12345.678


def _trees() -> tuple[lux.Layer, dict[str, Any], dict[str, Any]]:
    model = lux.Chain(lux.Linear(2, 3), lux.Dropout(0.1), lux.BatchNorm1d(3))
    ps, st = lux.setup(0, model)
    ps["layer_1"]["weight"] = torch.full((3, 2), _VALUE).requires_grad_(True)
    ps["layer_1"]["bias"] = torch.full((3,), _VALUE, dtype=torch.float64)
    return model, ps, st


def _table_rows(markup: str) -> list[list[str]]:
    page = parse(markup)
    (body,) = page.find_all(lambda n: n.tag == "tbody")
    return [
        [c.text() for c in r.children if isinstance(c, Node)]
        for r in body.children
        if isinstance(r, Node)
    ]


def test_the_tree_table_lists_every_leaf_and_no_value() -> None:
    _, ps, _ = _trees()
    table = tree_table(ps)
    text, markup = repr(table), table._repr_html_()
    rows = _table_rows(markup)
    assert [r[0] for r in rows] == lux.tree.paths(ps)
    assert rows[0] == ["layer_1.weight", "(3, 2)", "float32", "cpu", "✓"]
    assert rows[1] == ["layer_1.bias", "(3,)", "float64", "cpu", ""]
    assert rows[2] == ["layer_3.weight", "(3,)", "float32", "cpu", ""]
    for path in lux.tree.paths(ps):
        assert re.search(rf"^{re.escape(path)} +\(", text, re.M)
    for shown in (text, markup, str(table)):
        assert "12345" not in shown and "12,345" not in shown  # never a tensor's value
    elements, nbytes = 6 + 3 + 3 + 3, 6 * 4 + 3 * 8 + 3 * 4 + 3 * 4
    assert table.footer == f"4 tensors, {elements} elements, {nbytes} bytes"
    assert text.endswith(table.footer) and table.footer in parse(markup).text()
    assert f"font-family: {MONOSPACE}" in root_style(markup)


def test_the_state_table_shows_static_values() -> None:
    _, _, st = _trees()
    table = tree_table(st)
    rows = {r[0]: r for r in _table_rows(table._repr_html_())}
    assert rows["layer_2.training"][1] == "Static(True)"
    assert rows["layer_3.num_batches_tracked"][1:4] == ["()", "int64", "cpu"]
    assert table.footer.endswith(", 2 static values")
    assert table.tensors == 4 and table.elements == 2 + 3 + 3 + 1


def test_the_tree_table_counts_bytes_and_escapes_keys() -> None:
    big = {"w": torch.zeros(512, 1024, device="meta"), "<b>": torch.zeros(2, dtype=torch.int8)}
    table = tree_table(big)
    assert table.footer == "2 tensors, 524,290 elements, 2,097,154 bytes (2.0 MiB)"
    assert [r[2:4] for r in table.rows] == [("float32", "meta"), ("int8", "cpu")]
    markup = table._repr_html_()
    assert "<b>" not in markup and "&lt;b&gt;" in markup


# -------------------------------------------------------------------------- summary


def test_the_summary_has_a_text_repr_with_every_row() -> None:
    model = lux.Chain(lux.Linear(2, 3), lux.Dropout(0.1), lux.BatchNorm1d(3))
    ps, st = lux.setup(0, model)
    s = lux.summary(model, torch.ones(4, 2), ps, st)
    text = repr(s)
    assert not text.startswith("Summary(") and text == str(s)
    lines = text.splitlines()
    for path, layer, shape, n, k in s.rows:
        (line,) = [ln for ln in lines if ln.startswith(f"{path} ")]
        assert layer in line and shape in line
        assert line.split()[-2:] == [f"{n:,}", f"{k:,}"]
    assert lines[-1].split() == ["Total", f"{s.total_params:,}", f"{s.total_states:,}"]

    class Printer:
        out = ""

        def text(self, t: str) -> None:
            self.out += t

    printer = Printer()
    s._repr_pretty_(printer, False)
    assert printer.out == text


def test_the_summary_html_is_monospace_and_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    model = lux.Chain(_Tagged(evil), lux.Linear(2, 2))
    ps, st = lux.setup(0, model)
    s = lux.summary(model, torch.ones(3, 2), ps, st)
    markup = s._repr_html_()
    page = parse(markup)
    assert not page.find_all(lambda n: n.tag == "img")
    rows = _table_rows(markup)
    assert [r[0] for r in rows] == [r[0] for r in s.rows]
    assert rows[1][1] == short_repr(_Tagged(evil))
    assert f"font-family: {MONOSPACE}" in root_style(markup)
    (foot,) = page.find_all(lambda n: n.tag == "tfoot")
    cells = [c.text() for c in foot.find_all(lambda n: n.tag == "td")]
    assert cells == ["Total", "", "", "8", "0"] and s.total_params == 8


# -------------------------------------------------------------------------- IPython


class _Registry:
    """A stand-in for one IPython formatter: ``for_type`` and ``pop`` as IPython has them."""

    def __init__(self, initial: Any = None) -> None:
        self.printers: dict[type, Any] = {dict: initial} if initial else {}

    def for_type(self, typ: type, func: Any = None) -> Any:
        old = self.printers.get(typ)
        if func is not None:
            self.printers[typ] = func
        return old

    def pop(self, typ: type, default: Any = None) -> Any:
        return self.printers.pop(typ, default)


def test_the_extension_registers_and_unregisters_with_a_fake_ipython() -> None:
    def plain_dict(obj: Any, printer: Any, cycle: bool) -> None:
        printer.text("plain")

    html, plain = _Registry(), _Registry(plain_dict)
    ipython = SimpleNamespace(
        display_formatter=SimpleNamespace(formatters={"text/html": html, "text/plain": plain})
    )
    _, ps, _ = _trees()
    display.load_ipython_extension(ipython)
    display.load_ipython_extension(ipython)  # loading twice is loading once
    out = html.printers[dict](ps)
    assert _table_rows(out)[0][0] == "layer_1.weight" and "12345" not in out
    assert html.printers[dict]({"a": 1}) is None  # other dicts: no HTML
    assert html.printers[dict]({"a": torch.ones(1), "b": "text"}) is None

    class Printer:
        out = ""
        stack = (0,)  # the printer's stack: a top-level object

        def text(self, t: str) -> None:
            self.out += t

    printer = Printer()
    plain.printers[dict](ps, printer, False)
    assert printer.out == str(tree_table(ps))
    printer.out = ""
    plain.printers[dict]({"a": 1}, printer, False)
    assert printer.out == "plain"  # the printer it replaced
    display.unload_ipython_extension(ipython)
    assert html.printers == {} and plain.printers == {dict: plain_dict}


def test_the_extension_with_ipython_formatters() -> None:
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    ipython = SimpleNamespace(display_formatter=formatter)
    _, ps, st = _trees()
    before = formatter.format(ps)[0]
    assert "12345" in before["text/plain"] and "text/html" not in before
    display.load_ipython_extension(ipython)
    data = formatter.format(ps)[0]
    assert data["text/plain"] == str(tree_table(ps))
    assert [r[0] for r in _table_rows(data["text/html"])] == lux.tree.paths(ps)
    assert "12345" not in data["text/plain"] + data["text/html"]
    assert "layer_2.training" in formatter.format(st)[0]["text/plain"]
    assert formatter.format({"a": 1})[0] == {"text/plain": "{'a': 1}"}
    assert formatter.format({})[0] == {"text/plain": "{}"}
    loop: dict[str, Any] = {"w": torch.ones(1)}
    loop["self"] = loop  # a dict that holds itself: IPython's own printout, no recursion
    assert formatter.format(loop)[0]["text/plain"] == "{'w': tensor([1.]), 'self': {...}}"
    nested = formatter.format([ps])[0]["text/plain"]  # inside a list: the ordinary printout
    assert nested.startswith("[{'layer_1'") and "text/html" not in formatter.format([ps])[0]
    display.unload_ipython_extension(ipython)
    assert formatter.format(ps)[0] == before


@pytest.mark.parametrize("extension", ["lux_torch", "lux_torch.display"])
def test_load_ext_in_a_real_shell(
    extension: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(history_length=0)
    try:
        _, ps, _ = _trees()
        formatter = shell.display_formatter
        assert formatter is not None
        shell.run_line_magic("load_ext", extension)
        data = formatter.format(ps)[0]
        assert data["text/plain"] == str(tree_table(ps)) and "<table" in data["text/html"]
        shell.run_line_magic("unload_ext", extension)
        assert "12345" in formatter.format(ps)[0]["text/plain"]
    finally:
        InteractiveShell.clear_instance()
