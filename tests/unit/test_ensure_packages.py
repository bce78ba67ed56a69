"""devtools/ensure-packages.sh, as `make` runs it for someone who is not root: what it asks to be installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "devtools" / "ensure-packages.sh"


@pytest.fixture(name="bin_dir")
def fixture_bin_dir(tmp_path: Path) -> Path:
    """A PATH of one directory whose `id` says a user that is not root, and a python3 that has no ensurepip (as
    Debian's python3 without python3-venv)."""
    (tmp_path / "id").write_text("#!/bin/sh\necho 1000\n")
    (tmp_path / "python-without-venv").write_text("#!/bin/sh\nexit 1\n")
    for program in tmp_path.iterdir():
        program.chmod(0o755)
    return tmp_path


def run(bin_dir: Path, python: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "PYTHON": python}
    return subprocess.run(["/bin/sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)


def test_before_the_venv_is_built_a_python_without_venv_asks_for_python3_venv_in_one_line(bin_dir: Path) -> None:
    """`make` asks before building .venv: with no ensurepip it stops, naming python3-venv alone, in one line."""
    done = run(bin_dir, str(bin_dir / "python-without-venv"), "venv")
    asks = "jit-lb: missing Debian packages: python3-venv; install them with: sudo apt-get install -y python3-venv"
    assert (done.returncode, done.stderr) == (1, asks + "\n")


def test_before_the_venv_is_built_only_python3_venv_is_asked_for(bin_dir: Path) -> None:
    """With a python that can make a venv, the venv check passes even where redis-server and the rest are missing:
    `make lint` needs no Redis."""
    done = run(bin_dir, sys.executable, "venv")
    assert (done.returncode, done.stderr) == (0, "")


def test_make_demo_and_make_test_ask_for_python3_venv_beside_the_programs_they_start(bin_dir: Path) -> None:
    """The whole check names python3-venv too, beside the missing programs (redis-server at least: not on PATH)."""
    done = run(bin_dir, str(bin_dir / "python-without-venv"))
    assert done.returncode == 1
    missing = done.stderr.split("install them with: sudo apt-get install -y ")[1].split()
    assert missing[:2] == ["python3-venv", "redis-server"]
