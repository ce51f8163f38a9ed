"""Every Python block in README.md runs as written, offline, and passes ``mypy --strict``.

Blocks are found by their ```` ```python ```` fence, so a section added later is covered without
touching this module. Each block is a whole program (imports included, `asyncio.run` around any
`await`) and runs in a fresh temporary directory, where the embedded SQLite file lands.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .examples.test_examples import offline_env

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
HEADING = re.compile(r"^#+ (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    """One ```python block of the README: its code and the heading it sits under."""

    index: int
    heading: str
    code: str

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.heading.lower()).strip("_")
        return f"block_{self.index:02d}_{slug}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for index, match in enumerate(FENCE.finditer(text)):
        headings = HEADING.findall(text, 0, match.start())
        blocks.append(Block(index, headings[-1] if headings else "top", match.group(1)))
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_readme_block_is_a_whole_program_without_top_level_await(block: Block) -> None:
    # A top-level `await` does not parse as a module: it must sit inside a shown `asyncio.run`.
    ast.parse(block.code, filename=block.name)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_readme_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    script = tmp_path / f"{block.name}.py"
    script.write_text(block.code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{block.heading}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


def test_every_readme_block_passes_mypy_strict(tmp_path: Path) -> None:
    files = []
    for block in BLOCKS:
        path = tmp_path / f"{block.name}.py"
        path.write_text(block.code)
        files.append(str(path))
    # The project's (git-ignored) cache folder keeps this from re-checking the library each run.
    cache = ROOT / ".mypy_cache" / "readme-blocks"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(cache), *files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the quick start in particular
def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = FENCE.search(section)
    assert match is not None, "README has no python block under 'Quick start'"
    return match.group(1)


def test_quick_start_is_at_most_20_lines() -> None:
    lines = [line for line in quick_start_code().splitlines() if line.strip()]
    assert len(lines) <= 20


def test_quick_start_prints_what_it_promises(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start_code())
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == "1 {'tone': 'concise'} 1"
    assert second == "{'tone': 'concise'}"
    assert (tmp_path / "agent_sessions.db").exists()
