"""README.md's claims that code can check: the tour runs and prints what the README shows,
and every example the README names exists, has a tqdm bar and writes a PNG."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str, lang: str, start: int = 0) -> tuple[str, int]:
    """The first fenced ``lang`` block after ``heading`` (from ``start``), and its end."""
    at = README.index(heading, start)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, at)
    assert match is not None, (heading, lang)
    return match.group(1), match.end()


def test_tour_prints_what_the_readme_shows() -> None:
    code, end = _block_after("## A short tour", "python")
    shown, _ = _block_after("prints", "text", end)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (tour)", "exec"), {"__name__": "readme_tour"})
    *lines, last = out.getvalue().splitlines()
    *shown_lines, shown_last = shown.splitlines()
    # the printout and the state_dict keys (names and order) exactly as shown
    assert lines == shown_lines
    before, after = (float(v) for v in re.findall(r"[0-9]+\.[0-9]+", last))
    shown_before, shown_after = (float(v) for v in re.findall(r"[0-9]+\.[0-9]+", shown_last))
    assert before == pytest.approx(shown_before, abs=2e-3)
    assert after == pytest.approx(shown_after, abs=5e-3)
    assert after < before / 10


def test_the_two_commands_come_first() -> None:
    first, _ = _block_after("# lux_torch", "bash")
    assert 'pip install -e ".[examples]" && python examples/neural_ode_spiral.py' in first
    assert 'pip install -e ".[dev]" && pytest' in first
    assert (ROOT / "examples" / "neural_ode_spiral.py").is_file()


def test_every_named_example_exists_shows_progress_and_writes_a_png() -> None:
    named = set(re.findall(r"`examples/([a-z0-9_]+\.py)`", README))
    assert len(named) >= 15, named
    on_disk = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert named <= on_disk, named - on_disk
    assert on_disk <= named, on_disk - named  # the examples table lists every example
    for name in sorted(on_disk):
        source = (ROOT / "examples" / name).read_text()
        assert "tqdm(" in source, name  # "Each has a progress bar"
        assert ".savefig(" in source, name  # "... and writes a PNG"
        # "The examples use at most two threads"
        calls = source.count("torch.set_num_threads(")
        allowed = (
            "torch.set_num_threads(1)",
            "torch.set_num_threads(min(2, torch.get_num_threads()))",
        )
        assert calls > 0 and calls == sum(source.count(a) for a in allowed), name


def test_every_relative_link_points_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert any(link.startswith("docs/guide/") for link in links), links
    assert any(link.startswith("docs/tutorials/") for link in links), links
    assert any(link.startswith("docs/api/") for link in links), links
    missing = sorted({link for link in links if not (ROOT / link).is_file()})
    assert not missing, missing
