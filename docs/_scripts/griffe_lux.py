"""A griffe extension: lux_torch's docstring markup, rendered as Markdown by mkdocstrings.

The docstrings are Google style (``Arguments:``, ``Returns:``, ``Raises:``, ``Example:``
sections, which griffe parses) written with a few reStructuredText habits that IDEs and
``help()`` show well but Markdown does not know. This extension rewrites them, for the
site only (the source stays as it is), when griffe loads each object:

- ``:class:`~lux_torch.tree.map``` and the other Sphinx roles become inline code
  (```map```; the full path without ``~``);
- a paragraph ending in ``::`` followed by an indented block (a literal block) becomes the
  paragraph ending in ``:`` and a fenced code block (``python`` when the block parses as
  Python, ``text`` otherwise); ``Example::`` becomes the ``Example:`` section holding it;
- ``Example:`` becomes ``Examples:`` (the section griffe parses, rendering ``>>>`` as code);
- ``Arguments:`` / ``Keyword Arguments:`` sections keep their titles on the page (griffe
  would title both "Parameters", the word the layers use for ``ps``);
- an argument entry ``rtol, atol: text`` becomes one entry per name, each with the text;
- the ``**Parameters**`` / ``**States**`` headings of a layer's docstring, each followed by an
  indented list, become a bold line naming the tree (``(keys of `ps`)``) and a Markdown list
  (the Arguments table is titled "Parameters" too).

A module constant gets its ``#:`` comment as docstring. The class attributes are left out
of the pages (see :class:`LuxDocstrings`).

Configured in ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_SECTION_LITERAL = re.compile(r"^Examples?::$")
_TITLED = re.compile(r"^(\s*)(Arguments|Keyword Arguments):$", re.M)
_EXAMPLE = re.compile(r"^(\s*)Example:$")
_ARG_SECTION = re.compile(r"^(\s*)(Arguments|Args|Keyword Arguments|Attributes):$")
_NAMES = re.compile(r"^(\s*)(\*{0,2}\w+(?:, \*{0,2}\w+)+):(?: (.*))?$")
_BOLD_HEADING = re.compile(r"^\*\*(Parameters|States)\*\*(?: \((.*)\))?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _block(lines: list[str], start: int, base: int) -> int:
    """The end of the indented block that starts after ``lines[start]`` (indentation > base)."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _fence(body: list[str], indent: int) -> list[str]:
    code = textwrap.dedent("\n".join(body)).strip("\n")
    try:
        ast.parse(code)
        lang = "python"
    except SyntaxError:
        lang = "text"
    pad = " " * indent
    fenced = [f"{pad}```{lang}"]
    fenced += [f"{pad}{line}" if line.strip() else "" for line in code.splitlines()]
    fenced.append(f"{pad}```")
    return fenced


def _split_names(lines: list[str]) -> list[str]:
    """Entries ``a, b: text`` of an ``Arguments:`` section as one entry per name."""
    out: list[str] = []
    section: int | None = None  # the indentation of the current arguments section
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and section is not None and _indent(line) <= section:
            section = None
        header = _ARG_SECTION.match(line)
        if header:
            section = len(header.group(1))
        entry = _NAMES.match(line) if section is not None else None
        if entry and _indent(line) > section:  # type: ignore[operator]
            end = _block(lines, i, _indent(line))
            rest = lines[i + 1 : end]
            for name in entry.group(2).split(", "):
                text = f" {entry.group(3)}" if entry.group(3) else ""
                out.append(f"{entry.group(1)}{name}:{text}")
                out += rest
            i = end
            continue
        out.append(line)
        i += 1
    return out


def to_markdown(text: str) -> str:
    """``text`` (a docstring in lux_torch's markup) with the rewrites listed above."""
    text = _ROLE.sub(_role, text)
    lines = _split_names([_EXAMPLE.sub(r"\1Examples:", line) for line in text.splitlines()])
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        base = _indent(line)
        nxt = i + 1
        while nxt < len(lines) and not lines[nxt].strip():
            nxt += 1
        has_block = nxt < len(lines) and _indent(lines[nxt]) > base
        if stripped.endswith("::") and has_block:
            end = _block(lines, i, base)
            body = lines[i + 1 : end]
            if _SECTION_LITERAL.match(stripped):  # "Example::": the section holds the code
                out.append(line[:-1])
                out += _fence(body, _indent(lines[nxt]))
            else:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                out.append("")
                out += _fence(body, base)
            out.append("")
            i = end
            continue
        if _BOLD_HEADING.match(stripped) and has_block:
            end = _block(lines, i, base)
            heading = _BOLD_HEADING.match(stripped)
            assert heading is not None
            name, note = heading.groups()
            tree = "ps" if name == "Parameters" else "st"
            note = f", {note}" if note else ""
            out.append(f"{' ' * base}**{name}** (keys of `{tree}`){note}")
            out.append("")
            body = textwrap.dedent("\n".join(lines[i + 1 : end])).splitlines()
            out += [" " * base + b if b.strip() else "" for b in body]
            out.append("")
            i = end
            continue
        out.append(line)
        i += 1
    return _TITLED.sub(r"\1\2: \2:", "\n".join(out))


_BUILTIN_DOCS = {
    inspect.cleandoc(t.__doc__ or "")
    for t in (int, float, str, bool, tuple, list, dict, set, frozenset, bytes)
}


def _doc_comment(source: str, name: str) -> str | None:
    """The ``#:`` comment lines right above the module-level assignment of ``name``."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(name)}\s*(:[^=]*)?=", line):
            j = i
            while j > 0 and lines[j - 1].startswith("#:"):
                j -= 1
            comment = [c[2:].strip() for c in lines[j:i]]
            return " ".join(comment) if comment else None
    return None


class LuxDocstrings(griffe.Extension):
    """Rewrites each loaded object's docstring with :func:`to_markdown`; drops the
    attributes of classes (a layer's fields are its constructor's arguments, already in the
    Arguments table; class variables such as ``ndim`` are implementation)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        """A module constant's ``#:`` comment is its docstring. (Imported and inspected, a
        constant would otherwise show the docstring of its type: ``int``'s, ``dict``'s.)"""
        module = attr.parent
        if not isinstance(module, griffe.Module) or not isinstance(module.filepath, Path):
            return
        comment = _doc_comment(module.filepath.read_text(), attr.name)
        if comment is not None:
            attr.docstring = griffe.Docstring(to_markdown(comment), parent=attr)
        elif attr.docstring is not None and attr.docstring.value in _BUILTIN_DOCS:
            attr.docstring = None

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        for name, member in list(cls.members.items()):
            if not member.is_alias and member.is_attribute:
                cls.del_member(name)
