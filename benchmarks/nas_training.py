"""Cerebros NAS on real workers: a search's wall time on 1 and 2 processes, progress's cost.

It measures the wall time of a search on 1 and on 2 training worker processes, and what
one ``ctx.progress`` call costs.

The search is the test suite's: ten architectures (1-2 layers x 16-256 units) on digits,
``--epochs`` epochs each, every trial allowed to run at once. A light worker runs the
run-level steps; a training worker (``-Q training``) runs the trials with ``-c 1`` and then
``-c 2``. ``ctx.progress`` is timed in-process against the same Redis: one call records the
report (one write), tells telemetry and would send Flower its event.

Run it with nothing configured (it uses the embedded Redis in a temporary folder)::

    .venv/bin/python benchmarks/nas_training.py             # 3 searches per setting
    .venv/bin/python benchmarks/nas_training.py --quick     # one, few epochs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if "SAGALINE_DATA_DIR" not in os.environ:
    os.environ["SAGALINE_DATA_DIR"] = tempfile.mkdtemp(prefix="sagaline-nas-bench-")
sys.path[:0] = [p for p in (str(ROOT),) if p not in sys.path]

from config import app, engine, settings  # noqa: E402
from sagaline import SagaStatus, StepContext  # noqa: E402
from sagaline.runtime.progress import ProgressSink  # noqa: E402
from sagaline.status import Role  # noqa: E402

SEARCH = {"search_space": {"layers": [1, 2], "units": [16, 32, 64, 128, 256]},
          "max_trials": 10, "concurrency": 10}


def worker(name: str, queues: str, concurrency: int) -> subprocess.Popen[bytes]:
    """A real prefork worker of the project's app, answering a ping."""
    log = open(Path(settings.data_dir) / f"{name}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=prefork", "-c",
         str(concurrency), "-Q", queues, "-l", "warning", "--without-mingle",
         "--without-gossip", "-n", f"{name}@%h"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        hosts = [h for reply in app.control.ping(timeout=0.5) for h in reply]
        if any(h.startswith(f"{name}@") for h in hosts):
            return process
    process.kill()
    raise RuntimeError(f"worker {name} did not start; see {log.name}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def search_time(epochs: int) -> float:
    """The wall time of one search, start to completed."""
    started = time.perf_counter()
    run = engine.start("cerebros_nas", {**SEARCH, "epochs": epochs}).wait(timeout=900)
    if run.status is not SagaStatus.COMPLETED:
        raise RuntimeError(f"the search ended {run.status.value}: {run.error}")
    return time.perf_counter() - started


def progress_cost(calls: int) -> float:
    """Microseconds per ``ctx.progress`` call, recorded in the saga store."""
    sink = ProgressSink(engine.store, "bench", "bench-progress", Role.ACTION, "train_0", 1)
    ctx = StepContext(saga_id="bench-progress", saga_name="bench", step="train_0",
                      role=Role.ACTION, attempt=1, correlation_id="c", progress_sink=sink)
    for i in range(50):
        ctx.progress(i, calls, val_accuracy=0.9)
    started = time.perf_counter()
    for i in range(calls):
        ctx.progress(i, calls, val_accuracy=0.9, train_loss=0.1)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    """Measure and print; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one search of 3 epochs")
    args = parser.parse_args(argv)
    epochs, repeat = (3, 1) if args.quick else (args.epochs, args.repeat)
    app.control.purge()
    light = worker("nas-light", "celery", 2)
    try:
        results: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeat):  # alternate, so drift hits both
            for processes in (1, 2):
                trainer = worker(f"nas-train-{processes}", settings.training_queue, processes)
                try:
                    search_time(1)  # warm: the pool's processes import scikit-learn
                    results[processes].append(search_time(epochs))
                finally:
                    stop(trainer)
        print(f"10 trials x {epochs} epochs on digits, {repeat} search(es) per setting:")
        for processes, times in results.items():
            print(f"  {processes} training process(es): median {statistics.median(times):.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
        one, two = statistics.median(results[1]), statistics.median(results[2])
        print(f"  speed-up with 2 processes: {one / two:.2f}x")
        print(f"ctx.progress: {progress_cost(2000):.0f} µs per call (recorded in Redis, "
              "telemetry, no Flower event outside a worker)")
    finally:
        stop(light)
    return 0


if __name__ == "__main__":
    sys.exit(main())
