"""Every benchmark still imports and answers ``--help``: a move in the package breaks CI here.

The benchmarks are not run here (they measure; tests never assert timing):
each module of ``benchmarks/`` is imported in a child process (they import
each other by bare name and some install the real reactor), and each script
is run with ``--help`` in the repository, all at once so the whole file takes
a few seconds.  One benchmark reaches into the session's parts and checks
itself without measuring: ``hot_path.py --check-only`` (its due-only variant
must send the current path's bytes, on a memory reactor); it runs too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
SCRIPTS = [
    name for name in MODULES
    if 'if __name__ == "__main__":' in (BENCHMARKS / f"{name}.py").read_text(encoding="utf-8")
]
STDIN_JOBS = {"attack_kinds", "healthy_stream"}
"""Child processes fed one JSON job on standard input, with no command line of their own:
imported like every module, not run with ``--help``."""
TIMEOUT_S = 60
CHECK = "hot_path --check-only"

_IMPORT_ALL = """
import importlib, json, sys, traceback
sys.path.insert(0, "benchmarks")
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
print(json.dumps(failed))
"""


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Each benchmark module's import traceback, for the ones that failed (one child process)."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *MODULES],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    failures: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return failures


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """``python benchmarks/<script>.py --help`` for every script (and the check), side by side."""
    commands = {name: [f"{name}.py", "--help"] for name in SCRIPTS if name not in STDIN_JOBS}
    commands[CHECK] = ["hot_path.py", "--check-only"]
    running = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / script), *args],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for name, (script, *args) in commands.items()
    }
    finished = {}
    for name, process in running.items():
        try:
            out, err = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return finished


def test_the_benchmarks_are_found() -> None:
    assert {"hot_path", "session_cost", "service_load", "benchlib", "versus_zlm"} <= set(MODULES)
    assert "versus_zlm" in SCRIPTS  # its --help runs below with every other script's
    assert "benchlib" not in SCRIPTS


@pytest.mark.parametrize("name", MODULES)
def test_imports(name: str, import_failures: dict[str, str]) -> None:
    assert name not in import_failures, import_failures.get(name)


@pytest.mark.parametrize("name", [name for name in SCRIPTS if name not in STDIN_JOBS])
def test_answers_help(name: str, help_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    done = help_runs[name]
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr}"
    assert done.stdout.lower().startswith("usage:"), done.stdout[:500]
    assert "Traceback" not in done.stderr, done.stderr


def test_hot_path_variants_send_the_same_bytes(
    help_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = help_runs[CHECK]
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "identical" in done.stdout, done.stdout
