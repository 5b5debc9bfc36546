"""The API reference (docs/api/*.md) covers the public API, and docstrings are static text.

Fast: reads the pages and imports lux_torch; builds nothing (the strict ``mkdocs build`` in
.ci/run renders the pages).

- Every name in the ``__all__`` of every public module is documented on some page: by a
  ``::: path`` entry for the object itself, or for a module whose ``members:`` list names
  it; or, for a name that is not lux_torch's own (torch's ``calculate_gain``), by a heading
  with the explicit anchor ``{ #lux_torch.init.calculate_gain }``. Re-exports count where
  the object is documented (``lux_torch.Linear`` is documented by the entry of
  ``lux_torch.layers.basic``); a module counts when its own entry is there (the old alias
  paths ``lux_torch.ode``, ... are the same module objects as the real ones). The mkdocs
  hook ``docs/_scripts/hooks.py`` checks after the build that every entry was rendered.
- Every documented layer's docstring lists the keys of its ``ps`` and ``st`` (the
  ``**Parameters**`` and ``**States**`` blocks, each with content, possibly "None").
- No module assigns ``__doc__``: docstrings are literals that IDEs and doc tools read
  without importing, and what Python sees at run time is that literal.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import lux_torch
from lux_torch.core import Layer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lux_torch"
sys.path.insert(0, str(ROOT / "docs" / "_scripts"))
from api_pages import API, anchors, entries, read_pages  # noqa: E402
from hooks import unrendered  # noqa: E402


def public_modules() -> list[types.ModuleType]:
    """Every public module (no ``_`` in its dotted name) that defines ``__all__``; an alias
    module (``lux_torch.ode``: the module ``lux_torch.sciml.ode`` under another name) once."""
    names = ["lux_torch"] + [
        info.name for info in pkgutil.walk_packages(lux_torch.__path__, "lux_torch.")
    ]
    modules = []
    for name in names:
        if any(part.startswith("_") for part in name.split(".")):
            continue
        module = importlib.import_module(name)
        if module.__name__ == name and hasattr(module, "__all__"):
            modules.append(module)
    return modules


def resolve(path: str) -> Any:
    """The object a mkdocstrings identifier names (a module, or a member of one)."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def documented(pages: dict[str, str]) -> tuple[set[int], set[tuple[str, int]]]:
    """The modules (by id) and the ``(name, id(object))`` pairs the pages document."""
    modules: set[int] = set()
    objects: set[tuple[str, int]] = set()
    for _, path, members in entries(pages):
        obj = resolve(path)
        if isinstance(obj, types.ModuleType):
            modules.add(id(obj))
            names = members if members is not None else list(getattr(obj, "__all__", []))
            for name in names:
                objects.add((name, id(getattr(obj, name))))
        else:
            objects.add((path.rpartition(".")[2], id(obj)))
    for _, path in anchors(pages):
        objects.add((path.rpartition(".")[2], id(resolve(path))))
    return modules, objects


def undocumented(pages: dict[str, str]) -> list[str]:
    """``module.name`` for every public name the pages do not document."""
    modules, objects = documented(pages)
    missing = []
    for module in public_modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                if id(obj) not in modules:
                    missing.append(f"{module.__name__}.{name}")
            elif (name, id(obj)) not in objects:
                missing.append(f"{module.__name__}.{name}")
    return missing


def test_every_public_name_is_documented():
    pages = read_pages()
    assert pages, f"no pages in {API}"
    assert undocumented(pages) == []


def test_the_coverage_check_sees_a_removed_name():
    pages = read_pages()
    page = "layers-basic.md"
    assert "        - Linear\n" in pages[page]
    pages[page] = pages[page].replace("        - Linear\n", "", 1)
    missing = undocumented(pages)
    # the defining module, the package re-export and the top-level re-export
    assert "lux_torch.layers.basic.Linear" in missing
    assert "lux_torch.layers.Linear" in missing
    assert "lux_torch.Linear" in missing
    assert len(missing) == 3


def test_the_coverage_check_sees_a_removed_module():
    pages = read_pages()
    page = "sciml.md"
    assert "::: lux_torch.sciml.ode\n" in pages[page]
    pages[page] = pages[page].replace("::: lux_torch.sciml.ode\n", "", 1)
    missing = undocumented(pages)
    assert "lux_torch.ode" in missing  # the alias path is the same module
    assert "lux_torch.sciml.ode.NeuralODE" in missing


def test_the_coverage_check_sees_a_removed_anchor():
    pages = read_pages()
    assert "{ #lux_torch.init.calculate_gain }" in pages["init.md"]
    pages["init.md"] = pages["init.md"].replace("{ #lux_torch.init.calculate_gain }", "")
    assert "lux_torch.init.calculate_gain" in undocumented(pages)


def test_every_entry_names_an_existing_object_and_members():
    for _, path in anchors(read_pages()):
        resolve(path)
    for page, path, members in entries(read_pages()):
        obj = resolve(path)
        for name in members or []:
            assert hasattr(obj, name), f"{page}: {path} has no member {name!r}"
            if isinstance(obj, types.ModuleType) and hasattr(obj, "__all__"):
                assert name in obj.__all__, f"{page}: {path}.{name} is not in its __all__"


def test_the_build_hook_sees_an_unrendered_member(tmp_path):
    page = "::: lux_torch.tree\n    options:\n      members:\n        - map\n        - ravel\n"
    html = tmp_path / "api" / "tree" / "index.html"
    html.parent.mkdir(parents=True)
    html.write_text('<h2 id="lux_torch.tree"></h2><h3 id="lux_torch.tree.map"></h3>')
    assert unrendered(tmp_path, {"tree.md": page}) == ["tree.md: lux_torch.tree.ravel"]
    html.write_text(html.read_text() + '<h3 id="lux_torch.tree.ravel"></h3>')
    assert unrendered(tmp_path, {"tree.md": page}) == []


def test_every_api_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in read_pages():
        assert f"api/{page}" in nav, page


def documented_layers() -> dict[type, str]:
    layers: dict[type, str] = {}
    for module in public_modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, Layer) and obj is not Layer:
                layers[obj] = f"{obj.__module__}.{obj.__qualname__}"
    return layers


_BLOCK = r"\*\*{}\*\*([^\n]*)\n((?:[ \t]+\S[^\n]*\n)*)"


def tree_blocks(doc: str) -> dict[str, str]:
    """The text of the ``**Parameters**`` and ``**States**`` blocks of a layer docstring:
    a heading and its indented lines, or the inline form ``**States**: none (``{}``).``"""
    blocks = {}
    for title in ("Parameters", "States"):
        match = re.search(_BLOCK.format(title), inspect.cleandoc(doc) + "\n")
        if match is not None:
            inline = match.group(1).split("**")[0].strip(" :.")
            text = (inline + "\n" + textwrap.dedent(match.group(2))).strip()
            if text:
                blocks[title] = text
    return blocks


def test_every_documented_layer_lists_its_ps_and_st_keys():
    layers = documented_layers()
    assert len(layers) > 100
    problems = []
    for cls, path in layers.items():
        blocks = tree_blocks(cls.__doc__ or "")
        for title in ("Parameters", "States"):
            if not blocks.get(title):
                problems.append(f"{path}: no **{title}** block (the keys of ps/st, or None)")
    assert problems == []


def test_the_ps_st_check_sees_a_missing_block():
    doc = "A layer.\n\n**Parameters**\n    - ``weight``: ``(n,)``\n\nExample:\n    >>> 1\n"
    assert tree_blocks(doc) == {"Parameters": "- ``weight``: ``(n,)``"}
    assert tree_blocks(doc.replace("**Parameters**\n    - ``weight``: ``(n,)``\n", "")) == {}
    assert tree_blocks("A.\n\n**States**\n    None (``{}``).\n") == {"States": "None (``{}``)."}
    inline = "Input: ``x``.\n**Parameters**: none (``{}``). **States**: none (``{}``).\n"
    assert tree_blocks(inline) == {"Parameters": "none (``{}``)", "States": "none (``{}``)"}
    assert tree_blocks("**Parameters**\n\nExample:\n    >>> 1\n") == {}


def doc_assignments(source: str) -> list[int]:
    """The lines of ``source`` that assign ``__doc__`` (``x.__doc__ = ...``, ``__doc__ +=``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            targets = [ast.Name(id=getattr(node.args[1], "value", ""))] if node.args[1:] else []
        names = [getattr(t, "id", None) or getattr(t, "attr", None) for t in targets]
        if "__doc__" in names:
            lines.append(getattr(node, "lineno", 0))
    return sorted(lines)


def test_no_module_assigns_a_docstring():
    found = {
        str(path.relative_to(ROOT)): doc_assignments(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_docstring_check_sees_an_assignment():
    source = textwrap.dedent(
        """
        class A:
            __doc__ = "x"
        A.__doc__ = "y"
        A.__doc__ += "z"
        setattr(A, "__doc__", "w")
        """
    )
    assert doc_assignments(source) == [3, 4, 5, 6]


def literal_docstrings() -> dict[str, str | None]:
    """``module.Qualname`` -> the docstring literal of every top-level class and function."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                found[f"{module}.{node.name}"] = ast.get_docstring(node)
    return found


def test_runtime_docstrings_are_the_literals():
    literals = literal_docstrings()
    checked = 0
    for module in public_modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            key = f"{obj.__module__}.{obj.__qualname__}"
            if key not in literals:  # defined outside lux_torch (a re-export of torch's)
                assert not obj.__module__.startswith("lux_torch"), key
                continue
            assert literals[key] is not None, f"{key} has no docstring"
            assert inspect.cleandoc(obj.__doc__ or "") == literals[key], key
            checked += 1
    assert checked > 300


def test_the_home_page_example_runs(capsys):
    text = (ROOT / "docs" / "index.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1 and len(blocks[0].splitlines()) <= 25
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "docs/index.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "# Total: 129 parameters," in out and "loss 0." in out
    assert namespace["loss"].item() < 0.2  # it trained (the first step: 0.77)
    assert set(namespace["grads"]) == {"layer_1", "layer_2", "layer_3"}
