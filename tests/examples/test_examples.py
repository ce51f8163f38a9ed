"""Every notebook in `notebooks/` and every script in `examples/` runs, offline, as shipped.

Files are discovered by glob, so a new notebook or example is covered without touching this
module. `examples/fastapi_app.py` serves its app in-process through httpx's ASGITransport when
run as a script, so it needs no server here either. Each runs in a fresh temporary working
directory with network access to the outside world blocked by dead proxies and no API keys.

Each must also leave nothing behind (the working directory and the temporary folder it was given
are empty afterwards, so nothing new appears under `notebooks/` or the repo root when a user runs
it there) and show the same output on every run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 240


def offline_env() -> dict[str, str]:
    """The environment for notebooks and scripts: no model API keys, no route to the internet."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_API_TOKEN")) and k not in {"AGENT_SESSIONS_STORE"}
    }
    dead = "http://127.0.0.1:9"  # the discard port: any proxied request fails at once
    env.update(
        {
            "HTTP_PROXY": dead,
            "HTTPS_PROXY": dead,
            "ALL_PROXY": dead,
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "MPLBACKEND": "Agg",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def test_there_is_something_to_run() -> None:
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    assert EXAMPLES, "no scripts found in examples/"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{notebook.name}: a code cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{notebook.name}: a code cell has an execution count"


def isolated_dirs(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A fresh working directory, a fresh temporary folder, and the environment that uses both."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = offline_env()
    env.update({"TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), "MPLCONFIGDIR": str(tmp_path / "mpl")})
    return cwd, tmp, env


def left_behind(*folders: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for folder in folders for p in folder.rglob("*"))


def executed(notebook: Path, cwd: Path, env: dict[str, str]) -> Any:
    nb = nbformat.read(notebook, as_version=4)
    # One extra cell proves the kernel is this interpreter (the venv), not some other python3.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", allow_errors=False, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(cwd=str(cwd), env=env)
    return nb


def shown(nb: Any) -> list[Any]:
    """What each code cell showed: its printed text (however the kernel chunked it into stream
    messages) and its displayed data (images included), in order."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        data = [dict(o.get("data", {})) for o in cell.outputs if o.output_type != "stream"]
        cells.append((printed, data))
    return cells


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_offline_on_the_venv_kernel_leaves_nothing_and_shows_the_same_twice(
    notebook: Path, tmp_path: Path
) -> None:
    cwd, tmp, env = isolated_dirs(tmp_path)

    first = executed(notebook, cwd, env)

    outputs: list[Any] = first.cells[-1].outputs
    assert [o.get("text", "").strip() for o in outputs if o.output_type == "stream"] == [sys.executable]
    errors = [o for cell in first.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    assert left_behind(cwd, tmp) == []
    second = executed(notebook, cwd, env)
    assert shown(second) == shown(first)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_script_runs_offline_leaves_nothing_and_prints_the_same_twice(script: Path, tmp_path: Path) -> None:
    cwd, tmp, env = isolated_dirs(tmp_path)
    printed = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{script.name} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.stdout.strip(), f"{script.name} printed nothing"
        assert "Traceback" not in result.stderr
        assert left_behind(cwd, tmp) == []
        printed.append(result.stdout)
    assert printed[0] == printed[1]
