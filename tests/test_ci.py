"""The README's promise: its test command is what CI runs, and CI fails when a test fails."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "the README opens with a bash block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_latter() -> None:
    demo, test = readme_commands()[:2]
    assert demo == "python3 dev.py demo"
    assert test == "python3 dev.py test"
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_fails_on_a_fresh_clone_when_a_test_fails(tmp_path: Path) -> None:
    """Clone the committed tree, add a failing test, run .ci/run only on that test (through
    PYTEST_ADDOPTS, which pytest reads itself): the run exits non-zero.
    """
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / "tests" / "test_fails_on_purpose.py").write_text(
        '"""A test that fails."""\n\n\ndef test_fails() -> None:\n    assert 1 == 2\n'
    )
    # A virtual env for the clone that reuses this one's programs, already "installed"
    # for the clone's pyproject.toml, so dev.py neither installs nor touches this env.
    venv = tmp_path / "venv"
    venv.mkdir()
    for part in ("bin", "lib", "pyvenv.cfg"):
        (venv / part).symlink_to(Path(sys.prefix) / part)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".sagaline-installed-{digest}").touch()
    env = {
        **os.environ,
        "SAGALINE_VENV": str(venv),
        "PYTEST_ADDOPTS": "tests/test_fails_on_purpose.py -p no:cacheprovider",
    }
    result = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0
    assert "1 failed" in result.stdout
