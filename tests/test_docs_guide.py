"""The user guide's code runs: every ```python block of docs/guide/*.md, page by page.

Conventions for guide pages (docs/guide/*.md):

* Every fenced block whose language is ``python`` runs. The blocks of one page run in order
  in one fresh namespace, in a fresh Python process whose working directory is a scratch
  folder (files a page writes land there), with warnings turned into errors as in the test
  suite (a page that expects a warning catches it in its code).
* A ``python`` block whose first line is ``# not run: <reason>`` does not run (a
  ``torchrun`` script, a training loop over data the page does not have); it must still
  parse.
* A block that shows printed output directly after a ``python`` block is a ``text`` block
  with the title ``Output`` (````` ```text title="Output" `````): it must equal what that
  ``python`` block printed (trailing spaces and blank lines at the end ignored). An Output
  block anywhere else (after prose, after a block that is not run) is an error, since it
  could not be checked.
* Other languages (``bash``, ``text``, ``julia``, ...) are never run.

Run a page by hand with ``python tests/test_docs_guide.py docs/guide/<page>.md`` (in a
scratch folder; it prints the seconds each block took).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import types
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide"
NOT_RUN = "# not run:"
# pages whose blocks take more than about 5 s in all (2 CPU threads; the imports not counted)
SLOW_PAGES = {"compilation.md", "optimizers.md", "training.md"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclasses.dataclass
class Block:
    """One fenced code block of a page."""

    language: str
    info: str
    code: str
    line: int  # 1-based line of the opening fence
    output: str | None = None  # the ```text title="Output" block that follows, if any
    is_output: bool = False  # this is a ```text title="Output" block
    attached: bool = False  # (an Output block) it directly follows a python block


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text; a ``python`` block gets its output block."""
    lines = text.splitlines()
    found: list[Block] = []
    ends: list[int] = []  # line index after each block's closing fence
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (
                close is not None
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        else:
            raise ValueError(f"line {i + 1}: the code block opened here is never closed")
        language = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        found.append(Block(language, info, "\n".join(body) + "\n", i + 1))
        ends.append(j + 1)
        i = j + 1
    for k, block in enumerate(found):
        block.is_output = block.language == "text" and 'title="Output"' in block.info
        if not block.is_output or k == 0:
            continue
        before = found[k - 1]
        between = lines[ends[k - 1] : block.line - 1]
        if before.language == "python" and not any(s.strip() for s in between):
            before.output = block.code
            block.attached = True
    return found


def _normal(out: str) -> str:
    return "\n".join(line.rstrip() for line in out.rstrip().splitlines())


def run_page(path: pathlib.Path) -> dict[str, object]:
    """Run the page's python blocks in one namespace (in this process); a report."""
    # a real module named as a script's, so that classes defined on a page (dataclasses:
    # lux.Layer) find their module and print as they would in the reader's script
    module = types.ModuleType("__main__")
    namespace = module.__dict__
    main = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        return _run_blocks(path, namespace)
    finally:
        sys.modules["__main__"] = main


def _run_blocks(path: pathlib.Path, namespace: dict[str, object]) -> dict[str, object]:
    started = time.perf_counter()
    timings: dict[int, float] = {}
    for block in blocks(path.read_text(encoding="utf-8")):
        where = f"{path.name}, block at line {block.line}"
        if block.is_output and not block.attached:  # it would never be checked
            raise ValueError(f"{where}: an Output block must directly follow a python block")
        if block.language != "python":
            continue
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        compiled = compile(block.code, where, "exec")  # a block that does not parse fails
        if first.startswith(NOT_RUN):
            if not first[len(NOT_RUN) :].strip():
                raise ValueError(f"{where}: '{NOT_RUN}' needs a reason")
            if block.output is not None:
                raise ValueError(f"{where}: a block that is not run cannot show an Output")
            continue
        out = io.StringIO()
        block_started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            exec(compiled, namespace)
        timings[block.line] = round(time.perf_counter() - block_started, 2)
        if block.output is not None and _normal(out.getvalue()) != _normal(block.output):
            raise AssertionError(
                f"{where}: printed output differs from the Output block\n"
                f"--- printed\n{out.getvalue()}--- Output block\n{block.output}"
            )
    return {"seconds": time.perf_counter() - started, "blocks": timings}


def _warnings_as_errors() -> None:
    # the filters of pyproject.toml's [tool.pytest.ini_options]
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch._inductor.*")
    warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", DeprecationWarning)


def _run_in_subprocess(page: pathlib.Path, cwd: pathlib.Path) -> dict[str, object]:
    import torch

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, __file__, str(page), "--threads", str(torch.get_num_threads())],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"{page.name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _pages() -> list[object]:
    pages = sorted(GUIDE.glob("*.md"))
    return [
        pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_PAGES else [])
        for p in pages
    ]


def test_the_guide_has_pages() -> None:
    names = {p.name for p in GUIDE.glob("*.md")}
    assert {"getting-started.md", "core.md", "training.md", "from-torch.md"} <= names


@pytest.mark.parametrize("page", _pages())
def test_guide_page_runs(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    report = _run_in_subprocess(page, tmp_path)
    assert isinstance(report["seconds"], float)


# ------------------------------------------------------------- the checker checks (meta tests)


def _page(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """# Page

```python
x = 2
print(x * 21)
```

```text title="Output"
42
```

=== "tab"

    ```python
    y = x + 1  # indented in a tab: same namespace
    ```

```python
# not run: needs a cluster
import torch.distributed
```

```bash
this is not python
```
"""


def test_checker_runs_blocks_in_one_namespace(tmp_path: pathlib.Path) -> None:
    path = _page(tmp_path, GOOD + "\n```python\nassert y == 3\n```\n")
    assert [b.language for b in blocks(path.read_text())] == [
        "python",
        "text",
        "python",
        "python",
        "bash",
        "python",
    ]
    run_page(path)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("```python\nraise RuntimeError('broken block')\n```\n", RuntimeError),
        ("```python\nassert y == 4\n```\n", AssertionError),
        ('```python\nprint(1)\n```\n\n```text title="Output"\n2\n```\n', AssertionError),
        ("```python\n# not run: reason\ndef f(:\n```\n", SyntaxError),
        ("```python\n# not run:\npass\n```\n", ValueError),
        ("```python\nprint(1)\n", ValueError),
        ('Text.\n\n```text title="Output"\n1\n```\n', ValueError),
        (
            '```python\n# not run: reason\nprint(1)\n```\n```text title="Output"\n1\n```\n',
            ValueError,
        ),
    ],
    ids=[
        "raises",
        "assertion",
        "output-differs",
        "not-run-unparsable",
        "no-reason",
        "unclosed",
        "orphan-output",
        "output-of-not-run",
    ],
)
def test_checker_fails_on_a_broken_block(tmp_path: pathlib.Path, extra: str, error: type) -> None:
    path = _page(tmp_path, GOOD + "\n" + extra)
    with pytest.raises(error):
        run_page(path)


def test_checker_fails_on_an_unexpected_warning(tmp_path: pathlib.Path) -> None:
    path = _page(tmp_path, GOOD + "\n```python\nimport warnings\nwarnings.warn('surprise')\n```\n")
    with pytest.raises(pytest.fail.Exception, match="surprise"):
        _run_in_subprocess(path, tmp_path)


if __name__ == "__main__":
    page = pathlib.Path(sys.argv[1]).resolve()
    if "--threads" in sys.argv:
        import torch

        torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
    _warnings_as_errors()
    import lux_torch  # noqa: F401  (imported before the clock starts: pages are timed alone)

    with tempfile.TemporaryDirectory() as scratch:  # files a page writes land here
        os.chdir(scratch)
        print(json.dumps(run_page(page)))
