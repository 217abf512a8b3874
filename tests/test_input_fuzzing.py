"""Input fuzzing of the two entry points that take inputs: ``engine.start`` and ``sagaline run``.

Hypothesis draws inputs from each saga's input model (the app's sagas and the test sagas):
valid ones, invalid ones, odd shapes, huge, deep and non-JSON values, and for the command
line JSON texts of every kind. Whatever the input, an entry point either starts a saga
whose recorded inputs are the model's JSON dump, or refuses it cleanly: an
``InvalidInputError`` (exit 2 with a message, for the command line) that names the field
or the problem, with nothing recorded and nothing enqueued.

The sagas start on an engine of their own that no worker consumes (``tests.support.fuzz_app``):
its own Redis database, key prefix and queue, all cleared at the end.

Three named tests (under "inputs that escape today") are inputs that escape now: each fails
until the engine or the command line refuses it cleanly. The fuzzing keeps ints below
Python's 4,300-digit text limit so that it checks everything else meanwhile.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

import sagaline.cli
from sagaline import InvalidInputError, Sagaline
from sagaline.cli import main
from sagaline.cli.app import cli, printable
from tests.conftest import ROOT
from tests.support.fuzzing import (
    Case,
    Expected,
    FuzzApp,
    expect_run,
    expect_start,
    run_texts,
    start_inputs,
)

FUZZ_APP = "tests.support.fuzz_app"
#: Examples per entry point; at least MINIMUM must have run.
EXAMPLES = 5_300
MINIMUM = 5_000
#: Accepted sagas between two clear-outs of the fuzzing database.
FORGET_EVERY = 200

#: A model instance built with ``model_construct`` and wrong values makes pydantic warn as
#: ``start`` dumps it (before refusing it); that is pydantic's notice, not the engine's.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(HealthCheck),
                         print_blob=False)


@pytest.fixture(scope="module")
def fuzz(engine: Sagaline) -> Iterator[FuzzApp]:
    """The fuzzing engine (``tests.support.fuzz_app``); what it recorded goes at the end."""
    module = importlib.import_module(FUZZ_APP)
    app: FuzzApp = module.fuzz
    app.client.ping()
    yield app
    app.close()
    assert not list(app.client.scan_iter(match=f"{app.prefix}*")), "fuzzing keys were left"


def sagas_by_model(fuzz: FuzzApp) -> dict[type[BaseModel], list[str]]:
    """Every saga's name, grouped by its input model."""
    groups: dict[type[BaseModel], list[str]] = {}
    for saga in fuzz.engine.registry:
        groups.setdefault(saga.inputs, []).append(saga.name)
    return groups


@dataclass
class Tally:
    """How many inputs an entry point saw, by kind and by outcome."""

    kinds: collections.Counter[str]
    outcomes: collections.Counter[str]
    accepted_since_forget: int = 0

    @classmethod
    def new(cls) -> Tally:
        return cls(collections.Counter(), collections.Counter())

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def note(self, fuzz: FuzzApp, case: Case, accepted: bool) -> None:
        self.kinds[case.kind] += 1
        self.outcomes["accepted" if accepted else "refused"] += 1
        if accepted:
            self.accepted_since_forget += 1
            if self.accepted_since_forget >= FORGET_EVERY:
                fuzz.forget()
                self.accepted_since_forget = 0

    def report(self, entry: str) -> str:
        return (f"{entry}: {self.total} inputs; {dict(self.outcomes)}; by kind: "
                f"{dict(sorted(self.kinds.items()))}")


def assert_accepted_recorded(fuzz: FuzzApp, saga: str, saga_id: str, expected: Expected,
                             before: tuple[int, ...]) -> None:
    """The run is recorded once, with the model's JSON dump as its inputs, and enqueued."""
    after = fuzz.snapshot()
    assert after[1] == before[1] + 1, "an accepted input must record exactly one saga"
    assert sum(after[2:]) > sum(before[2:]), "an accepted input must enqueue its first step"
    assert fuzz.engine.store.name_of(saga_id) == saga
    assert fuzz.engine.store.inputs(saga_id) == expected.dump


def assert_nothing_recorded(fuzz: FuzzApp, before: tuple[int, ...]) -> None:
    """No key was written and no queue grew."""
    after = fuzz.snapshot()
    assert after == before, (
        f"a refused input changed the store or a queue: keys {before[0]} -> {after[0]}, "
        f"sagas {before[1]} -> {after[1]}, queues {before[2:]} -> {after[2:]}")


def check_start(fuzz: FuzzApp, saga: str, model: type[BaseModel], case: Case) -> bool:
    """Start ``saga`` with the case's inputs and check what happened; whether accepted."""
    expected = expect_start(model, case.value)
    before = fuzz.snapshot()
    try:
        handle = fuzz.engine.start(saga, case.value)
    except InvalidInputError as error:
        assert not expected.accepted, f"the model accepts what start refused: {error}"
        assert_nothing_recorded(fuzz, before)
        assert error.saga == saga
        assert error.errors, "a refusal must say what is wrong"
        fields = [e["field"] for e in error.errors]
        allowed = {*model.model_fields, "(inputs)"}
        assert all(f.split(".")[0] in allowed for f in fields), fields
        assert all(e["problem"] for e in error.errors)
        message = str(error)
        assert all(f"{f}: " in message for f in fields), message
        if expected.names != ("(inputs)",):
            assert sorted(fields) == sorted(expected.names), (fields, expected.names)
        return False
    assert expected.accepted, f"start accepted what the model refuses ({expected.names})"
    assert_accepted_recorded(fuzz, saga, handle.saga_id, expected, before)
    return True


# -- the command line, in this process --------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What ``sagaline`` did: its exit code, its output, and any exception that escaped."""

    code: int
    out: str
    err: str
    escaped: BaseException | None = None


RUNNER = CliRunner()


@pytest.fixture(scope="module")
def built_cli() -> Iterator[None]:
    """``main`` calls the click command Typer builds from the ``cli`` app, built once.

    Typer rebuilds it on every call (about 20 ms, most of a run in this process); ``main``
    and its mapping of errors to exit codes stay as they are.
    """
    command = typer.main.get_command(cli)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sagaline.cli, "cli", command)
        yield


def _code(value: object) -> int:
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


def run_in_process(args: list[str], stdin: bytes | None = None) -> Run:
    """Run ``sagaline ARGS`` through :func:`sagaline.cli.main`, as the console script does.

    An exception escaping ``main`` is what a real process prints as a traceback and exits
    1 with; it is returned, with its traceback on stderr.
    """
    argv = sys.argv
    escaped: BaseException | None = None
    code = 0
    with RUNNER.isolation(input=stdin) as (out, err, _):
        sys.argv = ["sagaline", *args]
        try:
            main()
        except SystemExit as done:
            code = _code(done.code)
        except Exception as error:
            escaped, code = error, 1
            traceback.print_exc()
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout = out.getvalue().decode("utf-8", "backslashreplace")
        stderr = err.getvalue().decode("utf-8", "backslashreplace")
    return Run(code, stdout, stderr, escaped)


def run_args(saga: str, text: str, via_stdin: bool) -> list[str]:
    """The arguments of ``sagaline run`` for ``text``, given inline or read from stdin."""
    return ["--app", FUZZ_APP, "run", saga, f"--input={'-' if via_stdin else text}"]


def expect_text(model: type[BaseModel], raw: bytes | str) -> Expected:
    """What ``run`` must do with input given as text, or as bytes on stdin."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Expected(False, names=("--input",))
    return expect_run(model, raw)


def check_run(fuzz: FuzzApp, saga: str, model: type[BaseModel], case: Case,
              stdin: bytes | None) -> bool:
    """Run ``sagaline run`` with the case's text and check what happened; whether accepted."""
    expected = expect_text(model, case.value if stdin is None else stdin)
    before = fuzz.snapshot()
    result = run_in_process(run_args(saga, case.value, stdin is not None), stdin)
    assert result.escaped is None, (
        f"an exception escaped (exit 1 with a traceback): {result.escaped!r}\n{result.err}")
    assert "Traceback" not in result.err, result.err
    if not expected.accepted:
        assert result.code == 2, f"a refusal must exit 2, not {result.code}: {result.err}"
        assert result.err.startswith("error: "), result.err
        # Control characters in a name are shown escaped, never sent to the terminal raw.
        assert all(printable(name) in result.err for name in expected.names), (
            expected.names, result.err)
        assert_nothing_recorded(fuzz, before)
        return False
    assert result.code == 0, f"an accepted input must exit 0: {result.err}"
    assert_accepted_recorded(fuzz, saga, result.out.strip(), expected, before)
    return True


# -- the properties -------------------------------------------------------------------------


def test_engine_start_records_what_the_model_accepts_and_cleanly_refuses_the_rest(
        fuzz: FuzzApp) -> None:
    """Over 5,000 generated inputs, ``engine.start`` starts a saga recording the model's JSON
    dump, or raises ``InvalidInputError`` naming the fields (or ``(inputs)``) having
    recorded and enqueued nothing.
    """
    groups = sagas_by_model(fuzz)
    models = list(groups)
    tally = Tally.new()

    inputs = st.one_of(*(
        st.tuples(st.just(m), st.sampled_from(groups[m]),
                  start_inputs(m, [o for o in models if o is not m] or [m]))
        for m in models))

    @FUZZ_SETTINGS
    @given(inputs)
    def start_any(drawn: tuple[type[BaseModel], str, Case]) -> None:
        model, saga, case = drawn
        tally.note(fuzz, case, check_start(fuzz, saga, model, case))

    began = time.monotonic()
    start_any()
    print(tally.report("engine.start"), f"in {time.monotonic() - began:.1f} s")
    assert tally.total >= MINIMUM, tally.report("engine.start")
    assert tally.outcomes["accepted"] > 500 and tally.outcomes["refused"] > 500, tally.report(
        "engine.start")


def test_sagaline_run_records_what_the_model_accepts_and_exits_2_on_the_rest(
        fuzz: FuzzApp, built_cli: None) -> None:
    """Over 5,000 generated ``--input`` texts (inline or on stdin), ``sagaline run`` starts a
    saga recording the model's JSON dump and exits 0, or exits 2 with a message on stderr
    naming the fields or ``--input``, no traceback, and nothing recorded or enqueued.
    """
    groups = sagas_by_model(fuzz)
    models = list(groups)
    tally = Tally.new()
    stdin_forms = st.sampled_from(["inline", "stdin"])

    texts = st.one_of(*(st.tuples(st.just(m), st.sampled_from(groups[m]), run_texts(m),
                                  stdin_forms) for m in models))

    @FUZZ_SETTINGS
    @given(texts)
    def run_any(drawn: tuple[type[BaseModel], str, Case, str]) -> None:
        model, saga, case, form = drawn
        # Stdin carries bytes: what UTF-8 cannot encode (lone surrogates) goes as an escape.
        stdin = case.value.encode("utf-8", "backslashreplace") if form == "stdin" else None
        tally.note(fuzz, case, check_run(fuzz, saga, model, case, stdin))

    began = time.monotonic()
    run_any()
    print(tally.report("sagaline run"), f"in {time.monotonic() - began:.1f} s")
    assert tally.total >= MINIMUM, tally.report("sagaline run")
    assert tally.outcomes["accepted"] > 500 and tally.outcomes["refused"] > 500, tally.report(
        "sagaline run")


# -- the command line, as a real process ------------------------------------------------------

SUBPROCESS_CASES: list[tuple[str, str]] = [
    ("t_quick", '{"tag": "fuzz"}'),
    ("order_processing", json.dumps({"customer_id": "C", "total_amount": "12.50",
                                     "items": [{"product_id": "P", "quantity": 2}]})),
    ("travel_booking", '{"traveler": "", "flight_id": "F", "hotel_id": "H"}'),
    ("order_processing", json.dumps({"customer_id": "C", "total_amount": 0.001,
                                     "items": [{"product_id": "", "quantity": 0}]})),
    ("t_quick", '{"tag": 5}'),
    ("t_quick", "[[\"tag\", \"x\"]]"),
    ("t_quick", "{'tag': 'x'}"),
    ("t_quick", "[" * 30_000 + "]" * 30_000),  # an argument may hold 128 KiB at most
    ("t_quick", '{"tag": NaN}'),
    ("t_parent", '{"tag": "\\ud800", "x": Infinity}'),
    ("t_quick", ""),
]


def test_sagaline_run_as_a_process_does_what_it_does_in_process(fuzz: FuzzApp) -> None:
    """A handful of inputs give, run as ``python -m sagaline.cli``, the exit code and error
    message they give through ``main`` in this process, and record the same inputs.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for saga, text in SUBPROCESS_CASES:
        model = fuzz.engine.registry.get(saga).inputs
        expected = expect_run(model, text)
        here = run_in_process(run_args(saga, text, False))
        before = fuzz.snapshot()
        there = subprocess.run(
            [sys.executable, "-m", "sagaline.cli", *run_args(saga, text, False)], cwd=ROOT,
            env=env, capture_output=True, text=True, timeout=120)
        assert there.returncode == here.code, (saga, text[:80], there.stderr[-2000:])
        assert "Traceback" not in there.stderr, there.stderr[-2000:]
        if expected.accepted:
            assert there.returncode == 0
            assert_accepted_recorded(fuzz, saga, there.stdout.strip(), expected, before)
        else:
            assert there.returncode == 2
            assert there.stderr.strip() == here.err.strip(), (there.stderr, here.err)
            assert_nothing_recorded(fuzz, before)


# -- inputs that escape today ---------------------------------------------------------------

#: An int of more digits than Python turns into text (sys.get_int_max_str_digits(): 4300).
TOO_LONG_DIGITS = "1" + "0" * 5000
TOO_LONG = 10 ** 5000


def test_engine_start_refuses_an_int_too_long_for_json_as_invalid_input(fuzz: FuzzApp) -> None:
    """A quantity of 5,001 digits passes the model (``gt=0``) but JSON cannot write it:
    ``start`` must refuse it as invalid input (``(inputs)``: cannot be recorded as JSON),
    with nothing recorded. Today the ``ValueError`` of ``json.dumps`` escapes from the
    store's ``create``.
    """
    inputs = {"customer_id": "C", "total_amount": "1.00",
              "items": [{"product_id": "P", "quantity": TOO_LONG}]}
    before = fuzz.snapshot()
    try:
        with pytest.raises(InvalidInputError) as refused:
            fuzz.engine.start("order_processing", inputs)
        assert "(inputs)" in str(refused.value) or "quantity" in str(refused.value)
    finally:
        assert_nothing_recorded(fuzz, before)


def test_sagaline_run_refuses_a_json_number_too_long_to_read_with_exit_2(
        fuzz: FuzzApp, built_cli: None) -> None:
    """``--input`` holding a number of 5,001 digits (here in a field the model ignores)
    cannot be read by ``json.loads``: ``run`` must exit 2 with a message naming
    ``--input``. Today ``json.loads``'s ``ValueError`` (no ``JSONDecodeError``) escapes
    ``parse_inputs``: a traceback and exit 1.
    """
    text = '{"tag": "fuzz", "n": ' + TOO_LONG_DIGITS + "}"
    before = fuzz.snapshot()
    result = run_in_process(run_args("t_quick", text, False))
    assert result.escaped is None, repr(result.escaped)
    assert result.code == 2
    assert "--input" in result.err
    assert_nothing_recorded(fuzz, before)


def test_sagaline_run_refuses_stdin_that_is_not_utf8_with_exit_2(fuzz: FuzzApp,
                                                                   built_cli: None) -> None:
    """``--input -`` with bytes on stdin that are not UTF-8 must exit 2 with a message
    naming ``--input``. Today, where stdin decodes strictly (a UTF-8 locale such as
    en_US.UTF-8, or ``PYTHONIOENCODING=utf-8:strict``; the C and C.UTF-8 locales decode
    with ``surrogateescape`` instead), ``sys.stdin.read()`` in ``parse_inputs`` raises
    ``UnicodeDecodeError`` outside its ``try``: a traceback and exit 1.
    """
    before = fuzz.snapshot()
    result = run_in_process(run_args("t_quick", "", True), stdin=b'{"tag": "\xff"}')
    assert result.escaped is None, repr(result.escaped)
    assert result.code == 2
    assert "--input" in result.err
    assert_nothing_recorded(fuzz, before)


def test_every_kind_of_input_is_drawn_for_both_entry_points(fuzz: FuzzApp) -> None:
    """The strategies can draw every kind they declare, for every input model (a smoke test
    of the generators themselves, so a kind that never comes up is noticed).
    """
    groups = sagas_by_model(fuzz)
    models = list(groups)
    for model in models:
        others = [m for m in models if m is not model] or [model]
        for strategy, label in ((start_inputs(model, others), "start"),
                                (run_texts(model), "run")):
            kinds = kinds_drawn(strategy)
            assert len(kinds) >= 8, (model.__name__, label, kinds)


def kinds_drawn(strategy: st.SearchStrategy[Case], examples: int = 300) -> set[str]:
    """The kinds of case ``strategy`` drew in ``examples`` draws."""
    kinds: set[str] = set()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case: Case) -> None:
        kinds.add(case.kind)

    collect()
    return kinds
