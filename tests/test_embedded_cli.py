"""The embedded Redis from the command line: started only by a command that needs Redis,
announced once by the process that started it, seen and stopped with ``sagaline embedded``;
and the demo's example data, put back by the demo and by ``sagaline demo --reset``.

Every test runs the CLI as a real process on a data folder of its own (``tmp_path``, no
``SAGALINE_REDIS_URL``), and kills whatever server it started there; the session's shared
Redis is never touched (one test reads it through ``SAGALINE_REDIS_URL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagaline import Sagaline
from sagaline.store.embedded import EmbeddedRedis
from tests.conftest import EMBEDDED, ROOT

ANNOUNCED = "started the embedded Redis"


def isolated_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a process of the project on ``data_dir`` alone: no setting of the
    test session (its Redis, data folder, fault injection) leaks in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGALINE_")}
    return {**env, "PYTHONPATH": str(ROOT), "SAGALINE_DATA_DIR": str(data_dir), **extra}


def sagaline(data_dir: Path, *args: str, timeout: float = 120,
             **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sagaline.cli ARGS`` (the ``config`` app) on ``data_dir``."""
    return subprocess.run([sys.executable, "-m", "sagaline.cli", *args], cwd=ROOT,
                          env=isolated_env(data_dir, **extra), capture_output=True, text=True,
                          timeout=timeout)


def python(data_dir: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a process of the project on ``data_dir``."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=isolated_env(data_dir), capture_output=True, text=True,
                          timeout=120)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is None


def servers_on(server: EmbeddedRedis) -> list[int]:
    """The live processes whose command line names the server's socket."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(server.socket_path).encode() in cmdline.read_bytes():
                pid = int(cmdline.parent.name)
                if alive(pid):
                    pids.append(pid)
    return pids


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A fresh data folder; any server started on it is killed at the end."""
    yield tmp_path
    for pid in servers_on(EmbeddedRedis.for_app(tmp_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assert_nothing_started(data_dir: Path) -> None:
    server = EmbeddedRedis.for_app(data_dir)
    assert not server.pid_file.exists()
    assert not server.socket_path.exists()
    assert servers_on(server) == []


def test_commands_that_need_no_redis_start_none(folder: Path) -> None:
    """Listing sagas, the events lint, help, the schema's revision, the embedded status
    and stop, and the demo's reset leave no server (no socket, no pid file, no process).
    """
    for args in (["sagas"], ["sagas", "order_processing"], ["events", "lint"], ["--help"],
                 ["db", "current"], ["embedded", "status"], ["embedded", "stop"],
                 ["demo", "--reset"]):
        result = sagaline(folder, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert ANNOUNCED not in result.stderr, args
        assert_nothing_started(folder)


def test_a_command_that_needs_redis_starts_it_and_says_so_once(folder: Path) -> None:
    """The first command that talks to Redis starts the server and says what, where, why it
    stays and how to stop it, on stderr; the next one finds it running and says nothing.
    """
    first = sagaline(folder, "list")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(ANNOUNCED) == 1, first.stderr
    server = EmbeddedRedis.for_app(folder)
    pid = int(server.pid_file.read_text())
    for said in (f"pid {pid}", str(server.data_dir.resolve()), str(server.socket_path),
                 "keeps running after this command ends", "keeps your sagas across restarts",
                 f"sagaline embedded stop --data-dir {folder.resolve()}"):
        assert said in first.stderr, said
    assert ANNOUNCED not in first.stdout

    second = sagaline(folder, "list")
    assert second.returncode == 0, second.stderr
    assert "embedded" not in second.stderr
    assert servers_on(server) == [pid]


def test_status_shows_the_server_and_stop_stops_it_without_ever_starting_one(
    folder: Path,
) -> None:
    """``embedded status`` tells running or not (exit 0 both ways); ``embedded stop`` stops
    a running server (its pid is gone) and, with none running, starts none.
    """
    before = sagaline(folder, "embedded", "status", "--json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["running"] is False
    assert "not running" in sagaline(folder, "embedded", "status").stdout

    assert sagaline(folder, "list").returncode == 0  # starts it
    server = EmbeddedRedis.for_app(folder)
    with contextlib.closing(server.client()) as client:
        client.set("written-by-the-test", "1")
    status = json.loads(sagaline(folder, "embedded", "status", "--json").stdout)
    assert status["running"] is True
    assert status["pid"] == int(server.pid_file.read_text())
    assert status["socket"] == str(server.socket_path)
    assert status["redis_dir"] == str(server.data_dir.resolve())
    assert status["used_memory"] > 0 and status["keys"] == 1  # the key the test wrote
    shown = sagaline(folder, "embedded", "status").stdout
    assert "running" in shown and str(status["pid"]) in shown

    stopped = sagaline(folder, "embedded", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped the embedded Redis (pid {status['pid']})" in stopped.stdout
    assert not alive(status["pid"])
    assert json.loads(sagaline(folder, "embedded", "status", "--json").stdout)["running"] \
        is False

    again = sagaline(folder, "embedded", "stop")
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    assert servers_on(server) == [] and not server.is_running()


def test_with_a_redis_url_nothing_embedded_starts(folder: Path, engine: Sagaline) -> None:
    """With ``SAGALINE_REDIS_URL`` set, a command that talks to Redis uses that one."""
    url = os.environ.get("SAGALINE_REDIS_URL")
    if url is None:
        engine.store.client.ping()  # the session's embedded server runs from here on
        url = EMBEDDED.url
    result = sagaline(folder, "list", SAGALINE_REDIS_URL=url,
                      SAGALINE_KEY_PREFIX=f"embedded-cli-{uuid.uuid4().hex[:8]}:")
    assert result.returncode == 0, result.stderr
    assert ANNOUNCED not in result.stderr
    assert_nothing_started(folder)


def readme_order() -> str:
    """The README's first Python example (an order of 99.99 for CUST-123), as written,
    printing the run's status at the end.
    """
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    example = next(b for b in blocks if "from config import engine" in b)
    assert '"CUST-123"' in example and '"99.99"' in example
    return str(example) + "\nprint(run.status.value)\n"


def test_demo_reset_makes_the_readme_order_complete_again(folder: Path) -> None:
    """With the example money spent as the demo spends it, the README's order is undone;
    after ``sagaline demo --reset`` it completes, as the README says.
    """
    worker = subprocess.Popen(
        [sys.executable, "-m", "sagaline.cli", "worker", "-c", "1", "-l", "warning",
         "-n", f"embedded-cli-{uuid.uuid4().hex[:6]}@%h"],
        cwd=ROOT, env=isolated_env(folder), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        spent = python(folder, """
            from config import engine
            from config.demo import SCENARIOS
            # The demo's fallback scenario: CUST-123 is left 50.00, and 50.00 on the card.
            paid_by_card = next(s for s in SCENARIOS if not callable(s.inputs)
                                and s.inputs.get("total_amount") == "150.00")
            paid_by_card.prepare()
            print(engine.start(paid_by_card.saga, paid_by_card.make_inputs())
                  .wait(timeout=90).status.value)
        """)
        assert spent.returncode == 0, spent.stderr
        assert spent.stdout.split()[-1] == "completed"
        before = python(folder, readme_order())
        assert before.returncode == 0, before.stderr
        assert before.stdout.split()[-1] == "compensated"

        reset = sagaline(folder, "demo", "--reset")
        assert reset.returncode == 0, reset.stderr
        assert "CUST-123 500.00 with a backup card of 200.00, PROD-1 10 in stock" \
            in reset.stdout

        after = python(folder, readme_order())
        assert after.returncode == 0, after.stderr
        assert after.stdout.split()[-1] == "completed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def test_the_demo_puts_back_the_example_data_it_spends(folder: Path) -> None:
    """What the demo keeps (``config.demo.DATA``) is put back as it was, after every
    scenario's preparation spent or changed it; the README's rows are among it.
    """
    result = python(folder, """
        import json
        import config
        from config.demo import DATA, SCENARIOS, read_example_data, storage_full
        before = read_example_data()
        put_back = DATA.keep()
        for scenario in SCENARIOS:
            if scenario.prepare is not None:
                scenario.prepare()
        storage_full()
        changed = read_example_data()
        lines = put_back()
        print(json.dumps({"same_before": changed == before,
                          "same_after": read_example_data() == before, "lines": lines}))
    """)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["same_before"] is False  # the preparations did change it
    assert outcome["same_after"] is True
    assert "back as the demo found it: CUST-123 500.00" in outcome["lines"][0]
    assert_nothing_started(folder)
