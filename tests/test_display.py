"""Lux-style printouts and summary tables."""

from __future__ import annotations

import re

import torch

import lux_torch as lux
from lux_torch.display import short_repr


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
    assert model._repr_html_().startswith("<pre>Chain(")

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
    assert "<table>" in s._repr_html_()


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
