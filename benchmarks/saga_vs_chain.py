"""Sagaline's overhead against a raw Celery chain, on the same Redis and the same worker.

Four cases, each a saga and its raw Celery equivalent:

- ok: a 5-step saga whose steps do nothing, against a chain of 5 no-op tasks;
- fail: the same saga failing for good at step 4 (steps 1-3 compensated, step 5 never
  runs), against a chain whose 4th task fails, with a chain-level errback that enqueues 3
  no-op compensation tasks as a chain.

For each it measures the latency of sequential runs (start to final outcome seen by the
client: ``handle.wait()`` for a saga, ``AsyncResult.get()`` of the last task for the raw
chain), p50 and p99, and the throughput of a burst (start them all, then wait for all),
and prints the ratios saga/raw. Saga and raw runs alternate, so drift hits both.

Run it with nothing configured (it uses the embedded Redis in a temporary folder)::

    .venv/bin/python benchmarks/saga_vs_chain.py            # full run
    .venv/bin/python benchmarks/saga_vs_chain.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OWN_DATA_DIR = "SAGALINE_DATA_DIR" not in os.environ
# Settings are read once, when config is imported: fix the data folder before that.
if OWN_DATA_DIR:
    os.environ.setdefault("SAGALINE_DATA_DIR", tempfile.mkdtemp(prefix="sagaline-bench-"))
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]

from sagaline import EmbeddedRedis, SagaStatus  # noqa: E402

DATA_DIR = Path(os.environ["SAGALINE_DATA_DIR"])
EMBEDDED = EmbeddedRedis(DATA_DIR / "redis")
OWN_REDIS = "SAGALINE_REDIS_URL" not in os.environ and not EMBEDDED.is_running()

WORKER_NAME = "bench"
WAIT_TIMEOUT_S = 60.0
BURST_TIMEOUT_S = 600.0
WARMUP_RUNS = 20
TARGET_LATENCY = 1.3
TARGET_THROUGHPUT = 1.25

#: Blocks until the run's final outcome is seen, and checks it.
Waiter = Callable[[float], None]


@dataclass
class Side:
    """One way of running a case (the saga, or the raw chain) and what was measured."""

    label: str
    start: Callable[[], Waiter]
    latencies_s: list[float] = field(default_factory=list)
    burst_runs: int = 0
    burst_s: float = 0.0

    def run_once(self) -> float:
        """Start one run and wait for its outcome; the seconds it took."""
        began = time.perf_counter()
        self.start()(WAIT_TIMEOUT_S)
        return time.perf_counter() - began

    def burst(self, count: int) -> None:
        """Start ``count`` runs at once, then wait for all of them."""
        began = time.perf_counter()
        waiters = [self.start() for _ in range(count)]
        for wait in waiters:
            wait(BURST_TIMEOUT_S)
        self.burst_s += time.perf_counter() - began
        self.burst_runs += count

    @property
    def throughput(self) -> float:
        """Runs per second over every burst."""
        return self.burst_runs / self.burst_s if self.burst_s else math.nan


@dataclass
class Case:
    """A saga and its raw Celery equivalent."""

    name: str
    saga: Side
    raw: Side

    def sides(self, flip: bool) -> tuple[Side, Side]:
        """Both sides, the raw one first when ``flip``."""
        return (self.raw, self.saga) if flip else (self.saga, self.raw)


# -- the cases --------------------------------------------------------------------------------


def saga_starter(bench: ModuleType, saga: Any, expected: SagaStatus) -> Callable[[], Waiter]:
    """Start a saga; its waiter waits for the run and checks its status."""

    def start() -> Waiter:
        handle = bench.engine.start(saga, {})

        def wait(timeout: float) -> None:
            run = handle.wait(timeout)
            if run.status is not expected:
                raise RuntimeError(f"saga {handle.saga_id} ended {run.status}, not {expected}")

        return wait

    return start


def raw_starter(bench: ModuleType, failing: bool) -> Callable[[], Waiter]:
    """Start a raw chain; its waiter gets the last task's result (a compensation's if failing)."""
    from celery.result import AsyncResult

    def start() -> Waiter:
        result = bench.raw_chain(failing).apply_async()
        if failing:
            root = result
            while root.parent is not None:
                root = root.parent
            result = AsyncResult(bench.undo_id(root.id), app=bench.app)
        return lambda timeout: result.get(timeout=timeout)

    return start


def make_cases(bench: ModuleType) -> list[Case]:
    """The two cases: all steps succeed; step 4 fails and steps 1-3 are compensated."""
    return [
        Case(
            "ok: 5 no-op steps",
            Side("saga", saga_starter(bench, bench.saga_ok, SagaStatus.COMPLETED)),
            Side("raw chain", raw_starter(bench, failing=False)),
        ),
        Case(
            "fail at 4, 3 undone",
            Side("saga", saga_starter(bench, bench.saga_fail, SagaStatus.COMPENSATED)),
            Side("raw chain+errback", raw_starter(bench, failing=True)),
        ),
    ]


# -- the worker -----------------------------------------------------------------------------


def worker_command(concurrency: int) -> list[str]:
    """The command line of the bench worker."""
    return [
        sys.executable, "-m", "celery", "-A", "bench_app", "worker", "--pool=prefork",
        "-c", str(concurrency), "-l", "warning", "--without-mingle", "--without-gossip",
        "-n", f"{WORKER_NAME}@%h",
    ]


def wait_for_worker(app: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the bench worker answers a ping; warn about any other worker."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited; see {log}")
        hosts = [host for reply in app.control.ping(timeout=0.5) for host in reply]
        if any(host.startswith(f"{WORKER_NAME}@") for host in hosts):
            others = [h for h in hosts if not h.startswith(f"{WORKER_NAME}@")]
            if others:
                print(f"warning: other workers share the queue: {', '.join(others)}")
            return
    raise RuntimeError(f"the worker did not answer within 60 s; see {log}")


@contextmanager
def running_worker(app: Any, concurrency: int) -> Iterator[Path]:
    """A real prefork worker with the bench tasks, for the duration of the block."""
    app.control.purge()
    log = DATA_DIR / "bench-worker.log"
    pythonpath = os.pathsep.join(
        p for p in (str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    with open(log, "ab") as out:
        process = subprocess.Popen(
            worker_command(concurrency), cwd=HERE, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": pythonpath},
        )
    try:
        wait_for_worker(app, process, log)
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- measuring ------------------------------------------------------------------------------


def warm_up(cases: list[Case], runs: int) -> None:
    """Run every side a few times, so imports, connections and scripts are ready."""
    for _ in range(runs):
        for case in cases:
            for side in case.sides(flip=False):
                side.run_once()


def measure_latency(cases: list[Case], runs: int) -> None:
    """Sequential runs, saga and raw alternating (and which goes first, too)."""
    for i in range(runs):
        for case in cases:
            for side in case.sides(flip=i % 2 == 1):
                side.latencies_s.append(side.run_once())


def measure_throughput(cases: list[Case], count: int, rounds: int) -> None:
    """Bursts of ``count`` runs, saga and raw in alternating blocks."""
    for r in range(rounds):
        for case in cases:
            for side in case.sides(flip=r % 2 == 1):
                side.burst(count)


# -- reporting ------------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def side_row(case: str, side: Side) -> str:
    """One measured side as a table row."""
    p50 = percentile(side.latencies_s, 50) * 1000
    p99 = percentile(side.latencies_s, 99) * 1000
    return f"{case:<22}{side.label:<19}{p50:>9.2f}{p99:>10.2f}{side.throughput:>12.1f}"


def ratio_row(case: Case) -> str:
    """A case's ratios: latency saga/raw (p50 and p99), throughput raw/saga."""
    p50 = percentile(case.saga.latencies_s, 50) / percentile(case.raw.latencies_s, 50)
    p99 = percentile(case.saga.latencies_s, 99) / percentile(case.raw.latencies_s, 99)
    rate = case.raw.throughput / case.saga.throughput
    return f"{'':<22}{'ratio saga/raw':<19}{p50:>8.2f}x{p99:>9.2f}x{rate:>11.2f}x"


def verdict(case: Case) -> str:
    """Whether a case meets the targets."""
    p50 = percentile(case.saga.latencies_s, 50) / percentile(case.raw.latencies_s, 50)
    rate = case.raw.throughput / case.saga.throughput
    lat = "ok" if p50 <= TARGET_LATENCY else "MISSED"
    thr = "ok" if rate <= TARGET_THROUGHPUT else "MISSED"
    return f"  {case.name}: p50 {p50:.2f}x ({lat}), throughput {rate:.2f}x ({thr})"


def report(cases: list[Case], args: argparse.Namespace, redis_url: str) -> None:
    """Print the table, the ratios and the targets."""
    print()
    print(f"Sagaline vs raw Celery chain; worker prefork -c {args.concurrency}; "
          f"Redis {redis_url}")
    print(f"latency: {args.runs} sequential runs per case; "
          f"throughput: {args.rounds} burst(s) of {args.burst} per case")
    print()
    print(f"{'case':<22}{'':<19}{'p50 ms':>9}{'p99 ms':>10}{'sagas/s':>12}")
    for case in cases:
        print(side_row(case.name, case.saga))
        print(side_row("", case.raw))
        print(ratio_row(case))
    print()
    print("latency ratio = saga p50 / raw p50; throughput ratio = raw / saga (>1: saga slower)")
    print(f"target: saga p50 within {TARGET_LATENCY}x of raw; "
          f"throughput within {TARGET_THROUGHPUT}x")
    for case in cases:
        print(verdict(case))


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="latency samples per case")
    parser.add_argument("--burst", type=int, default=1000, help="runs started at once")
    parser.add_argument("--rounds", type=int, default=2,
                        help="bursts per side, alternating which side goes first")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: --runs 30 --burst 200 --rounds 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.burst, args.rounds = 30, 200, 1
    return args


def cleanup(ok: bool) -> None:
    """Stop the embedded Redis and remove the data folder, if this run made them."""
    if OWN_REDIS:
        EMBEDDED.stop()
    if OWN_DATA_DIR and ok:
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    elif OWN_DATA_DIR:
        print(f"kept {DATA_DIR} (worker log: {DATA_DIR / 'bench-worker.log'})")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    import bench_app

    ok = False
    try:
        cases = make_cases(bench_app)
        with running_worker(bench_app.app, args.concurrency):
            began = time.monotonic()
            warm_up(cases, WARMUP_RUNS)
            measure_latency(cases, args.runs)
            measure_throughput(cases, args.burst, args.rounds)
            elapsed = time.monotonic() - began
        report(cases, args, bench_app.app.conf.broker_url)
        print(f"(measured in {elapsed:.0f} s)")
        ok = True
    finally:
        cleanup(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
