#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py demo     a real saga on a real worker, on the embedded Redis
    python3 dev.py test     the whole test suite
    python3 dev.py check    ruff, mypy, the import layers (lint-imports) and the events lint
    python3 dev.py events   the events lint of the code and of the events the last test
                            session emitted (var/test-events.jsonl)
    python3 dev.py worker   a worker (pass celery options after it)

Each command creates the virtual environment (.venv, or $SAGALINE_VENV) and installs the
project into it when needed, so it works on a fresh clone.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SAGALINE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_environment() -> None:
    """Create the virtual env and (re)install the project when pyproject.toml changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating the virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".sagaline-installed-{digest}"
    if not stamp.exists():
        print("installing the project and its dependencies", flush=True)
        pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
        stamp.touch()


def run(*command: str) -> int:
    """Run a command from the virtual env in the project folder; return its exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.call([str(BIN / command[0]), *command[1:]], cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    """Dispatch ``demo``, ``test``, ``check``, ``events`` or ``worker``."""
    if not argv or argv[0] not in {"demo", "test", "check", "worker", "events"}:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return run("sagaline", "demo", *rest)
    if command == "test":
        return run("python", "-m", "pytest", *rest)
    if command == "worker":
        return run("sagaline", "worker", *rest)
    if command == "events":
        emitted = ROOT / "var" / "test-events.jsonl"
        if not emitted.exists():
            print(f"{emitted} is missing: run 'python3 dev.py test' first", file=sys.stderr)
            return 1
        return run("sagaline", "events", "lint", "--emitted", str(emitted), *rest)
    return (run("ruff", "check", "sagaline", "sagas", "tasks", "config", "tests", "benchmarks",
                "examples")
            or run("mypy") or run("lint-imports") or run("sagaline", "events", "lint"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
