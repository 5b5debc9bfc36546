"""Lux-style printouts and summary tables."""

from __future__ import annotations

import re
from typing import Any

import torch

import lux_torch as lux
from lux_torch.display import Summary, short_repr


def test_design_printout_exactly():
    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    assert repr(model) == (
        "Chain(\n"
        "    layer_1 = Linear(2 => 16, tanh),    # 48 parameters\n"
        "    layer_2 = Linear(16 => 1),          # 17 parameters\n"
        ")         # Total: 65 parameters,\n"
        "          #        plus 0 states."
    )


def test_leaf_printout_and_short_repr():
    assert repr(lux.Linear(2, 3, bias=False)) == "Linear(2 => 3, bias=False)  # 6 parameters"
    assert short_repr(lux.Chain(lux.Linear(1, 1))) == "Chain(...)"
    assert "plus 2 states" in repr(lux.Dropout(0.5))


def test_nested_containers_indent_and_thousands_separators():
    model = lux.Chain(
        encoder=lux.Chain(lux.Linear(784, 512, activation=torch.relu), lux.Dropout(0.2)),
        head=lux.Linear(512, 10),
    )
    text = repr(model)
    lines = text.splitlines()
    assert lines[0] == "Chain("
    assert lines[1] == "    encoder = Chain("
    assert lines[2].startswith("        layer_1 = Linear(784 => 512, relu),")
    assert lines[2].endswith("# 401,920 parameters")
    assert lines[4] == "    ),"
    assert "# Total: 407,050 parameters," in text
    assert "plus 2 states." in text


def test_runs_of_identical_layers_collapse():
    model = lux.Chain(
        lux.Linear(2, 64), *[lux.Linear(64, 64, activation=torch.relu)] * 8, lux.Linear(64, 1)
    )
    text = repr(model)
    assert "layer_2 … layer_9 = Linear(64 => 64, relu)," in text
    assert "# 33,280 (4,160 × 8) parameters" in text
    assert text.count("\n") == 5  # header, 3 children, 2 total lines
    # two identical layers are not collapsed
    pair = repr(lux.Chain(lux.Linear(2, 2), lux.Linear(2, 2)))
    assert "layer_1 = " in pair and "layer_2 = " in pair


def test_custom_layer_and_comment_alignment():
    class Gate(lux.Layer):
        width: int
        temperature: float = 1.0

        def init_params(self, key):
            return {"w": lux.init.ones(key, self.width)}

        def __call__(self, x, ps, st):
            return x * torch.sigmoid(ps["w"] / self.temperature), st

    model = lux.Chain(Gate(3), Gate(4, temperature=2.0), lux.Linear(4, 4))
    lines = repr(model).splitlines()
    assert lines[1].startswith("    layer_1 = Gate(width=3),")
    assert lines[2].startswith("    layer_2 = Gate(width=4, temperature=2.0),")
    columns = {line.index("#") for line in lines[1:4]}
    assert len(columns) == 1  # comments aligned


def test_notebook_reprs():
    model = lux.Chain(lux.Linear(2, 2))
    html = model._repr_html_()  # the collapsible tree: tests/test_display_html.py
    assert html.startswith('<div class="lux-display') and "<details" in html

    class Printer:
        def __init__(self):
            self.out = ""

        def text(self, s):
            self.out += s

    p = Printer()
    model._repr_pretty_(p, False)
    assert p.out == repr(model)


def test_summary_table():
    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Dropout(0.1), lux.Linear(16, 1))
    ps, st = lux.setup(0, model)
    s = lux.summary(model, torch.ones(5, 2), ps, st)
    paths = [row[0] for row in s.rows]
    assert paths == ["(model)", "layer_1", "layer_2", "layer_3"]
    shapes = {row[0]: row[2] for row in s.rows}
    assert shapes["layer_1"] == "(5, 16)" and shapes["(model)"] == "(5, 1)"
    params = {row[0]: row[3] for row in s.rows}
    assert params["layer_1"] == 48 and params["(model)"] == 65
    assert s.total_params == 65 and s.total_states == 2
    text = str(s)
    assert "output shape" in text and "Total" in text and "Linear(2 => 16, tanh)" in text
    assert "<table" in s._repr_html_() and repr(s) == text


def test_summary_counts_repeated_calls():
    model = lux.RepeatedLayer(lux.Linear(3, 3), repeats=3)
    ps, st = lux.setup(0, model)
    s = lux.summary(model, torch.ones(2, 3), ps, st)
    assert any("(×3 calls)" in row[2] for row in s.rows)


def test_child_counts_are_what_the_parent_stores() -> None:
    """A parent may store a child's tensors differently from the child alone: a
    transformer block keeps no state for its p = 0 dropouts, so the printout says so."""
    block = lux.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    _, st = lux.setup(0, block)
    assert lux.tree.count(st) == 0
    text = repr(block)
    assert "plus 2 states" not in text
    assert "dropout1 = Dropout(p=0.0),                                 # 0 parameters\n" in text
    noisy = repr(lux.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1))
    assert re.search(r"dropout1 = Dropout\(p=0\.1\), +# 0 parameters, plus 2 states\n", noisy)


class _Gated(lux.Layer):
    """A container that owns a tensor itself (``gate``) besides its child's."""

    inner: lux.Layer
    n: int = 3

    def init_params(self, key: torch.Tensor) -> dict[str, Any]:
        return {"inner": self.inner.init_params(key), "gate": torch.zeros(self.n)}

    def __call__(self, x: Any, ps: dict[str, Any], st: dict[str, Any]) -> tuple[Any, Any]:
        y, inner_st = self.inner(x, ps["inner"], st["inner"])
        return y * ps["gate"], {"inner": inner_st}


class _Hyper(lux.Layer):
    """A hypernetwork: ``hyper`` generates every parameter of ``target``."""

    hyper: lux.Layer
    target: lux.Layer

    def init_params(self, key: torch.Tensor) -> dict[str, Any]:
        return {"hyper": self.hyper.init_params(key)}

    def __call__(self, x: Any, ps: dict[str, Any], st: dict[str, Any]) -> tuple[Any, Any]:
        flat, hyper_st = self.hyper(torch.ones(1), ps["hyper"], st["hyper"])
        # the target's layout, from the target itself (as a user would write it)
        _, unravel = lux.tree.ravel(lux.init_params(0, self.target, device="meta"))
        y, target_st = self.target(x, unravel(flat), st["target"])
        return y, {"hyper": hyper_st, "target": target_st}


def _leaf_and_own_rows(s: Summary, model: lux.Layer) -> list[tuple[str, int, int]]:
    """The rows of layers without children and the ``(own)`` rows: each tensor once."""
    containers = {p or "(model)" for p, _ in _layers_by_path(model)}
    return [(r[0], r[3], r[4]) for r in s.rows if r[0] not in containers]


def _layers_by_path(layer: lux.Layer, path: str = "") -> list[tuple[str, lux.Layer]]:
    out = [(path, layer)] if layer.children() else []
    for name, child in layer.children().items():
        out += _layers_by_path(child, f"{path}.{name}" if path else name)
    return out


def test_a_container_owning_tensors_gets_a_row_and_a_line() -> None:
    model = lux.Chain(_Gated(lux.Linear(3, 3)), lux.Linear(3, 3))
    ps, st = lux.setup(0, model)
    assert lux.param_count(model) == 12 + 3 + 12
    s = lux.summary(model, torch.ones(2, 3), ps, st)
    rows = {r[0]: r for r in s.rows}
    assert rows["layer_1 (own)"][3] == 3 and rows["layer_1"][3] == 15
    assert [r[0] for r in s.rows] == [
        "(model)",
        "layer_1",
        "layer_1 (own)",
        "layer_1.inner",
        "layer_2",
    ]
    assert sum(n for _, n, _ in _leaf_and_own_rows(s, model)) == s.total_params == 27
    assert re.search(r"\(own tensors\), +# 3 parameters\n", repr(model))


def test_a_hypernetwork_target_is_not_counted_twice() -> None:
    target = lux.Linear(3, 3)  # 12 parameters, generated
    model = _Hyper(lux.Linear(1, 12), target)
    ps, st = lux.setup(0, model)
    assert lux.param_count(model) == 24  # the hyper network's (1 * 12 + 12) only
    s = lux.summary(model, torch.ones(2, 3), ps, st)  # also: the target's init is not nested
    rows = {r[0]: r for r in s.rows}
    assert rows["target"][2] == "(2, 3)"  # called, with the generated parameters
    assert rows["target"][3] == 0 and rows["hyper"][3] == 24
    assert sum(n for _, n, _ in _leaf_and_own_rows(s, model)) == s.total_params == 24
    text = repr(model)
    assert re.search(r"target = Linear\(3 => 3\), +# 0 parameters\n", text)
    assert "Total: 24 parameters" in text


def test_tied_parameters_are_marked() -> None:
    chain = lux.Chain(lux.Linear(3, 3), lux.Linear(3, 3), lux.Linear(3, 3))
    model, ps = lux.share_parameters(chain, lux.init_params(0, chain), [("layer_1", "layer_2")])
    st = lux.init_state(0, model)
    s = lux.summary(model, torch.ones(2, 3), ps, st)
    layers = {r[0]: r[1] for r in s.rows}
    assert layers["layer.layer_2"] == "Linear(3 => 3) [tied to layer.layer_1]"
    assert "tied" not in layers["layer.layer_1"] + layers["layer.layer_3"]
    assert {r[0]: r[3] for r in s.rows}["layer"] == 24 == s.total_params
    text = repr(model)
    assert re.search(r"layer_2 = Linear\(3 => 3\), +# 12 parameters, tied to layer_1\n", text)
    weights = lux.experimental.Shared(chain, [("layer_1.weight", "layer_3.weight")])
    assert re.search(
        r"layer_3 = .*# 12 parameters, weight tied to layer_1\.weight\n", repr(weights)
    )


def test_summary_inside_a_wrapper_counts_what_the_layers_receive() -> None:
    model = lux.freeze(lux.Chain(lux.Linear(3, 3), lux.Linear(3, 2)), "layer_1")
    ps, st = lux.setup(0, model)
    s = lux.summary(model, torch.ones(2, 3), ps, st)
    rows = {r[0]: (r[3], r[4]) for r in s.rows}
    assert rows["(model)"] == (8, 12)  # layer_2 trained; layer_1's 12 frozen into the state
    assert rows["layer"] == (8, 12)  # not the 20 parameters of the unfrozen chain
    assert rows["layer.layer_1"] == (0, 12) and rows["layer.layer_2"] == (8, 0)


def test_summary_of_a_layer_that_reads_its_childrens_configuration() -> None:
    """A transformer block reads ``self.dropout1.p`` in its call: the recorders that
    ``summary`` wraps the children in must show the children's configuration."""
    block = lux.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1)
    ps, st = lux.setup(0, block)
    s = lux.summary(block, torch.ones(2, 3, 8), ps, st)
    assert s.rows[0][2] == "(2, 3, 8)" and s.total_params == lux.param_count(block)
    assert {r[0]: r[3] for r in s.rows}["linear1"] == 8 * 16 + 16


def test_the_printout_of_a_frozen_layer_counts_frozen_parameters_as_states() -> None:
    model = lux.Chain(
        lux.Linear(2, 4), lux.freeze(lux.Chain(lux.Linear(4, 3), lux.Linear(3, 2)), "layer_1")
    )
    assert (lux.param_count(model), lux.state_count(model)) == (12 + 8, 15)
    text = repr(model)
    assert re.search(r"layer_1 = Linear\(4 => 3\), +# 0 parameters, plus 15 states\n", text)
    assert re.search(r"layer_2 = Linear\(3 => 2\), +# 8 parameters\n", text)
    assert "Total: 20 parameters" in text and "plus 15 states" in text
