"""Input fuzzing of ``engine.start`` and ``sagaline run``: an engine of its own, and inputs.

The fuzzing engine is built like the project's (JSON only) with every saga the test engine
has, but it records and enqueues where nothing else looks: its own Redis logical database
(``SAGAFUZZ_DB``), its own key prefix and its own default queue (``fuzz-<token>``, the
token from ``SAGAFUZZ_TOKEN``). No worker consumes that database, so the thousands of
sagas it starts never run, and a step that names its own queue (``tele-a``...) enqueues into
that database too, not into the queue the test workers take. Both settings are environment
variables, so a ``sagaline --app tests.support.fuzz_app`` subprocess builds the same engine.

The strategies draw inputs from a saga's input model: valid ones built from the model's
fields, types and constraints; invalid ones; odd shapes; huge, deep and non-JSON values.
The oracles say what the engine must do with an input, from the model alone.
"""

from __future__ import annotations

import collections
import enum
import functools
import json
import math
import os
import secrets
import types
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import quote

import email_validator
import redis
from celery import Celery
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, ValidationError
from pydantic.fields import FieldInfo

from config.celery import WIRE_SETTINGS
from sagaline import RedisStore, Saga, Sagaline

TOKEN_ENV = "SAGAFUZZ_TOKEN"
"""The environment variable holding the fuzzing engine's token (prefix and queue name)."""
DB_ENV = "SAGAFUZZ_DB"
"""The environment variable holding the Redis logical database the fuzzing engine uses."""
DEFAULT_DB = 11

#: Python refuses to turn an int of more digits into text (``sys.get_int_max_str_digits``),
#: so JSON cannot carry it either way. Generated ints stay below it; the named tests in
#: ``tests/test_input_fuzzing.py`` show what happens beyond it.
INT_DIGITS = 4000


# -- the fuzzing engine -------------------------------------------------------------------


@dataclass
class FuzzApp:
    """The fuzzing engine and where it records and enqueues."""

    app: Celery
    engine: Sagaline
    token: str
    db: int
    queues: tuple[str, ...]
    """Every queue a saga's first messages may go to: the default one and the steps' own."""

    @property
    def client(self) -> redis.Redis:
        """The store's client, on the fuzzing database."""
        return self.engine.store.client

    @property
    def prefix(self) -> str:
        """The store's key prefix."""
        return self.engine.store.prefix

    def snapshot(self) -> tuple[int, ...]:
        """Keys in the fuzzing database, sagas indexed, and each queue's length."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.dbsize()
            pipe.zcard(f"{self.prefix}index:all")
            for queue in self.queues:
                pipe.llen(queue)
            return tuple(int(n) for n in pipe.execute())

    def forget(self) -> int:
        """Delete every key of the store's prefix and every message of the queues."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        keys += [q for q in self.queues if self.client.exists(q)]
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start:start + 1000])
        return len(keys)

    def close(self) -> None:
        """Forget everything recorded and enqueued, and the bindings of the app's queues."""
        self.forget()
        self.client.delete(*(f"_kombu.binding.{q}" for q in self.queues))


def _client_on(base: redis.Redis, db: int) -> redis.Redis:
    pool = base.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def _broker_url(base: redis.Redis, db: int) -> str:
    pool = base.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"redis+socket://{kwargs['path']}?virtual_host={db}"
    user, password = kwargs.get("username"), kwargs.get("password")
    auth = ""
    if password:
        auth = f"{quote(str(user or ''), safe='')}:{quote(str(password), safe='')}@"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    return f"{scheme}://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def queues_of(sagas: list[Saga], default: str) -> tuple[str, ...]:
    """The default queue and every queue a step or its tasks name."""
    names = {default}
    for saga in sagas:
        for step in saga.steps:
            names.update(q for q in [step.queue, *(t.queue for t in step.tasks())] if q)
    return tuple(sorted(names))


def build_fuzz_app() -> FuzzApp:
    """The fuzzing engine: the test engine's sagas on a database and queue of their own.

    The token and database come from ``SAGAFUZZ_TOKEN`` and ``SAGAFUZZ_DB``;
    when unset they are chosen here and put into the environment, for subprocesses.
    """
    from tests.support.app import engine as test_engine

    token = os.environ.setdefault(TOKEN_ENV, secrets.token_hex(4))
    db = int(os.environ.setdefault(DB_ENV, str(DEFAULT_DB)))
    base = test_engine.store.client
    url = _broker_url(base, db)
    queue = f"fuzz-{token}"
    app = Celery(f"sagaline-fuzz-{token}")
    app.conf.update(**WIRE_SETTINGS, broker_url=url, task_default_queue=queue)
    sagas = list(test_engine.registry)
    store = RedisStore(_client_on(base, db), prefix=f"{queue}:")
    engine = Sagaline(app, store, sagas=sagas)
    return FuzzApp(app, engine, token, db, queues_of(sagas, queue))


# -- what the engine must do with an input ----------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What an entry point must do with one input."""

    accepted: bool
    dump: dict[str, Any] | None = None
    """The inputs as they must be recorded, when accepted."""
    names: tuple[str, ...] = ()
    """What a refusal's message must name: fields, ``(inputs)``, or ``--input``."""


def expect_start(model: type[BaseModel], inputs: Any) -> Expected:
    """What ``engine.start`` must do with ``inputs``, from the model alone.

    It accepts what the model validates and what JSON can then carry; it refuses the rest,
    naming each field pydantic names, or ``(inputs)`` for a problem of the whole.
    """
    if not isinstance(inputs, BaseModel | Mapping):
        return Expected(False, names=("(inputs)",))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = inputs.model_dump() if isinstance(inputs, BaseModel) else dict(inputs)
            dump = model.model_validate(data).model_dump(mode="json")
        json.dumps(dump, allow_nan=False)
    except ValidationError as error:
        return Expected(False, names=tuple(
            ".".join(str(p) for p in e["loc"]) or "(inputs)" for e in error.errors()))
    except (RecursionError, TypeError, ValueError):
        return Expected(False, names=("(inputs)",))
    return Expected(True, dump=dump)


def expect_run(model: type[BaseModel], text: str) -> Expected:
    """What ``sagaline run --input TEXT`` must do: refuse text that is no JSON object
    (naming ``--input``), else what :func:`expect_start` says of the object.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return Expected(False, names=("--input",))
    if not isinstance(value, dict):
        return Expected(False, names=("--input",))
    return expect_start(model, value)


# -- drawing values from a model ------------------------------------------------------------

_CONSTRAINTS = ("gt", "ge", "lt", "le", "min_length", "max_length", "max_digits",
                "decimal_places", "pattern")


def constraints(info: FieldInfo) -> dict[str, Any]:
    """The constraints a field declares (``gt``, ``min_length``, ``max_digits``...)."""
    return annotated_constraints(info.metadata)


def annotated_constraints(metadata: list[Any]) -> dict[str, Any]:
    """The constraints in annotation metadata (``annotated_types`` objects, ``FieldInfo``)."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(annotated_constraints(item.metadata))
            continue
        for name in _CONSTRAINTS:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


#: Text with what tends to break encoders: NUL, controls, quotes, astral planes.
ODD_CHARS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\x00", "\n", '"', "\\", "\u2028", "\ufeff", "\U0001f600", "é"]),
)
#: Lone surrogates: a Python string may hold them, UTF-8 (and pydantic's str) cannot.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    """Short text, sometimes with odd characters (all of them valid Unicode)."""
    return st.text(alphabet=ODD_CHARS, min_size=min_size, max_size=max_size)


def broken_text(min_size: int = 1, max_size: int = 20) -> st.SearchStrategy[str]:
    """Text with at least one lone surrogate."""
    return st.builds(lambda head, bad, tail: head + bad + tail, text(0, max_size // 2),
                     SURROGATES, text(0, max_size // 2)).filter(lambda t: len(t) >= min_size)


def is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is a pydantic model class."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def valid_value(annotation: Any, rules: Mapping[str, Any], *, for_json: bool
                ) -> st.SearchStrategy[Any]:
    """A value the field accepts, built from its type and constraints.

    ``for_json``: only values JSON can carry (a model's instance becomes its dict).
    """
    origin = get_origin(annotation)
    if annotation is EmailStr:
        return st.emails().filter(lambda e: len(e) <= int(rules.get("max_length", 320))
                                  and _valid_email(e))
    if annotation is str and "pattern" in rules:
        return st.from_regex(rules["pattern"], fullmatch=True).filter(
            lambda s: len(s) <= int(rules.get("max_length", 10 ** 6)))
    if annotation is float:
        return st.floats(min_value=rules.get("gt", rules.get("ge")),
                         max_value=rules.get("lt", rules.get("le")),
                         exclude_min="gt" in rules, exclude_max="lt" in rules,
                         allow_nan=False, allow_infinity=False)
    if annotation is str:
        low = int(rules.get("min_length", 0))
        return text(low, max(low, int(rules.get("max_length", low + 20))))
    if annotation is int:
        low = rules["gt"] + 1 if "gt" in rules else rules.get("ge", -(10 ** 6))
        high = rules["lt"] - 1 if "lt" in rules else rules.get("le", low + 10 ** 6)
        if "lt" in rules or "le" in rules:
            return st.integers(low, high)
        return st.one_of(st.integers(low, high),
                         st.integers(low, max(high, 10 ** (INT_DIGITS - 1))))
    if annotation is Decimal:
        return _valid_decimal(rules, for_json=for_json)
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        item_rules: dict[str, Any] = {}
        if get_origin(item) is Annotated:  # list[Annotated[int, Field(gt=0)]]
            item, *meta = get_args(item)
            item_rules = annotated_constraints(meta)
        low = int(rules.get("min_length", 0))
        # Distinct items: a model may require them, and distinct lists are valid for others.
        return st.lists(valid_value(item, item_rules, for_json=for_json), min_size=low,
                        max_size=max(low, int(rules.get("max_length", low + 3))),
                        unique_by=lambda v: repr(v))
    if is_model(annotation):
        fields = valid_fields(annotation, for_json=for_json)
        if for_json:
            return fields
        return st.one_of(fields, fields.map(annotation.model_validate))
    return st.from_type(annotation)


def _valid_email(address: str) -> bool:
    """Whether email-validator (which ``EmailStr`` uses) takes the address: it refuses some
    that RFC 5322 allows (special-use domains), which Hypothesis may draw.
    """
    try:
        email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


def _valid_decimal(rules: Mapping[str, Any], *, for_json: bool) -> st.SearchStrategy[Any]:
    places = int(rules.get("decimal_places", 2))
    digits = int(rules.get("max_digits", 12))
    step = Decimal(1).scaleb(-places)
    low = Decimal(rules["gt"]) + step if "gt" in rules else Decimal(rules.get("ge", -(10 ** 6)))
    high = Decimal(10) ** (digits - places) - step
    if "lt" in rules or "le" in rules:
        high = min(high, Decimal(rules["lt"]) - step if "lt" in rules else Decimal(rules["le"]))
    decimals = st.decimals(min_value=low, max_value=high, places=places, allow_nan=False,
                           allow_infinity=False)
    # A JSON number is read as a float: only those that keep their digits.
    as_float = decimals.filter(lambda d: Decimal(repr(float(d))) == d).map(float)
    forms = [decimals.map(str), as_float]
    if not for_json:
        forms.append(decimals)
    return st.one_of(*forms)


def valid_fields(model: type[BaseModel], *, for_json: bool) -> st.SearchStrategy[dict[str, Any]]:
    """A dict the model accepts: every required field, some optional ones."""
    required = {n: valid_value(f.annotation, constraints(f), for_json=for_json)
                for n, f in model.model_fields.items() if f.is_required()}
    optional = {n: valid_value(f.annotation, constraints(f), for_json=for_json)
                for n, f in model.model_fields.items() if not f.is_required()}
    return st.fixed_dictionaries(required, optional=optional)


def invalid_value(annotation: Any, rules: Mapping[str, Any], *, for_json: bool
                  ) -> st.SearchStrategy[Any]:
    """A value out of the field's range, or of a wrong type (the model may still take it)."""
    options: list[st.SearchStrategy[Any]] = [json_values(3) if for_json else any_values()]
    if annotation is str:
        options.append(broken_text())
        if "min_length" in rules:
            options.append(text(0, max(0, int(rules["min_length"]) - 1)))
    if annotation is int:
        if "gt" in rules:
            options.append(st.integers(max_value=rules["gt"]))
        options.append(st.sampled_from(["1", "1.0", "one", "", " 3 ", "0x10", "1_000"]))
        options.append(st.floats(allow_nan=not for_json, allow_infinity=not for_json))
    if annotation is Decimal:
        options.append(st.sampled_from([
            "0", "-0", "-1", "0.001", "1.234", "12345678901.00", "1e999999999", "1E-999999999",
            "NaN", "-Infinity", "sNaN", "1e99999999999999999999", "", " 1 ", "1,00", "0x10",
        ]))
        options.append(st.floats(allow_nan=not for_json, allow_infinity=not for_json))
        options.append(st.decimals(allow_nan=False, allow_infinity=False).map(str))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (Any,)
        options.append(st.just([]))
        options.append(st.lists(invalid_value(item, {}, for_json=for_json), min_size=1,
                                max_size=3))
        if is_model(item):
            options.append(st.lists(invalid_fields(item, for_json=for_json), min_size=1,
                                    max_size=3))
    if is_model(annotation):
        options.append(invalid_fields(annotation, for_json=for_json))
    return st.one_of(*options)


def invalid_fields(model: type[BaseModel], *, for_json: bool
                   ) -> st.SearchStrategy[dict[str, Any]]:
    """A dict that breaks the model: a required field missing, or one field invalid."""
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    valid = valid_fields(model, for_json=for_json)
    invalid = {n: invalid_value(f.annotation, constraints(f), for_json=for_json)
               for n, f in model.model_fields.items()}
    broken = st.one_of(*(st.tuples(st.just(n), v) for n, v in invalid.items()))
    options = [st.builds(lambda d, nv: {**d, nv[0]: nv[1]}, valid, broken)]
    if required:
        options.append(st.builds(
            lambda d, gone: {k: v for k, v in d.items() if k not in gone}, valid,
            st.lists(st.sampled_from(required), min_size=1, unique=True)))
    return st.one_of(*options)


# -- values of every kind -----------------------------------------------------------------


def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    """Values JSON can carry."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                        st.floats(allow_nan=False, allow_infinity=False), text(), broken_text())
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(text(), inner, max_size=3)),
        max_leaves=8) if depth else scalars


class Colour(enum.Enum):
    """An enum JSON cannot encode."""

    RED = "red"


class Named(str, enum.Enum):
    """A string enum."""

    TAG = "tag"


class Opaque:
    """An object JSON cannot encode, with a ``repr`` that fails."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Pairs(Mapping[Any, Any]):
    """A read-only mapping that is no dict."""

    def __init__(self, items: Mapping[Any, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"product_id": "p", "quantity": 1, "tag": "t"}
    value["self"] = value
    return value


NON_JSON: list[Callable[[], Any]] = [
    set, lambda: {1, 2, 3}, lambda: frozenset({"a"}), object, Opaque, lambda: math.nan,
    lambda: math.inf, lambda: -math.inf, lambda: datetime.now(UTC), lambda: date(2026, 1, 1),
    lambda: time(12, 0), lambda: timedelta(seconds=3), uuid.uuid4, lambda: Decimal("NaN"),
    lambda: Decimal("sNaN"), lambda: Decimal("Infinity"), lambda: 1 + 2j,
    lambda: b"bytes", lambda: b"\xff\xfe", lambda: bytearray(b"tag"),
    lambda: PurePosixPath("/tmp/x"), lambda: Colour.RED, lambda: Named.TAG, lambda: range(3),
    lambda: (lambda: None), lambda: type, lambda: Ellipsis, lambda: NotImplemented,
    lambda: memoryview(b"abc"), _cyclic_list, _cyclic_dict,
    lambda: collections.deque([{"product_id": "p", "quantity": 1}]),
    lambda: types.SimpleNamespace(tag="t"),
]
"""Makers of values JSON cannot encode (fresh each time: some are mutable).

No iterators: validating one consumes it, so the oracle and the engine would see different
values (iterators come only as whole inputs, which are refused before being read).
"""


def non_json_values() -> st.SearchStrategy[Any]:
    """One value JSON cannot encode."""
    return st.sampled_from(NON_JSON).map(lambda make: make())


def any_values() -> st.SearchStrategy[Any]:
    """A JSON value, or one JSON cannot encode, possibly inside a list or dict."""
    leaf = st.one_of(json_values(1), non_json_values())
    return st.one_of(leaf, st.lists(leaf, max_size=3),
                     st.dictionaries(st.one_of(text(), st.integers()), leaf, max_size=3))


def nested(depth: int, leaf: Any, kind: str) -> Any:
    """``leaf`` inside ``depth`` lists or dicts (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {kind: value}
    return value


def deep_values(max_depth: int = 5000) -> st.SearchStrategy[Any]:
    """A value nested 50 to ``max_depth`` levels deep."""
    return st.builds(nested, st.integers(50, max_depth), st.one_of(json_values(0), st.just({})),
                     st.sampled_from(["list", "a", "tag", "items"]))


def huge_text() -> st.SearchStrategy[str]:
    """Text of 10,000 to 60,000 characters."""
    return st.builds(lambda s, n: (s * (n // len(s) + 1))[:n], text(1, 8),
                     st.integers(10_000, 60_000))


@dataclass(frozen=True)
class Case:
    """One generated input and the kind it was drawn as."""

    kind: str
    value: Any = field(repr=False)

    def __repr__(self) -> str:
        try:
            shown = repr(self.value)
        except Exception:
            shown = f"<{type(self.value).__name__}>"
        return f"Case({self.kind}, {shown[:300]}{'...' if len(shown) > 300 else ''})"


def of_kinds(kinds: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Case]:
    """Cases of each kind about equally often (``one_of`` would favour kinds of many parts)."""
    cases = {kind: strategy.map(functools.partial(Case, kind))
             for kind, strategy in kinds.items()}
    return st.sampled_from(list(cases)).flatmap(cases.__getitem__)


def _with(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**values, key: value}


def start_inputs(model: type[BaseModel], others: list[type[BaseModel]]
                 ) -> st.SearchStrategy[Case]:
    """Inputs for ``engine.start`` of a saga with ``model``, of every kind."""
    fields = list(model.model_fields)
    valid = valid_fields(model, for_json=False)
    field_name = st.sampled_from(fields)
    extra_key = st.one_of(text(1, 12), broken_text()).filter(
        lambda k: k not in model.model_fields)
    odd_keys = st.one_of(st.integers(), st.none(), st.binary(max_size=4),
                         st.tuples(st.integers()), st.floats(allow_nan=False),
                         st.frozensets(st.integers(), max_size=2), st.just(Named.TAG))
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "valid": valid,
        "valid model instance": valid.map(model.model_validate),
        "valid mapping": st.builds(lambda d, wrap: wrap(d), valid, st.sampled_from(
            [types.MappingProxyType, collections.OrderedDict, Pairs,
             lambda d: collections.defaultdict(list, d)])),
        "valid with extra fields": st.builds(lambda d, extra: {**extra, **d}, valid,
                                             st.dictionaries(extra_key, any_values(),
                                                             min_size=1, max_size=4)),
        "missing or invalid field": invalid_fields(model, for_json=False),
        "wrong type": st.builds(_with, valid, field_name, any_values()),
        "odd shape": st.one_of(
            text(), st.binary(max_size=10), st.builds(bytearray, st.binary(max_size=5)),
            st.integers(), st.floats(), st.none(), st.booleans(), st.lists(json_values(1)),
            valid.map(lambda d: list(d.items())), valid.map(lambda d: tuple(d.items())),
            valid.map(lambda d: iter(d.items())), st.sets(text(), max_size=3),
            valid.map(lambda d: (pair for pair in d.items())),
            st.just(model), st.just(object()),
            valid_fields(model, for_json=True).map(json.dumps),
            *(valid_fields(m, for_json=False).map(m.model_validate) for m in others),
            valid.map(lambda d: model.model_construct(**{k: [v] for k, v in d.items()})),
        ),
        "non-string keys": st.one_of(
            st.dictionaries(odd_keys, any_values(), min_size=1, max_size=3),
            st.builds(lambda d, k, v: {**d, k: v}, valid, odd_keys, any_values()),
        ),
        "huge": st.one_of(
            st.builds(_with, valid, field_name, huge_text()),
            st.builds(_with, valid, field_name,
                      st.builds(lambda v, n: [v] * n, json_values(1), st.integers(1000, 10_000))),
            st.builds(lambda d, n: {**{f"k{i}": i for i in range(n)}, **d}, valid,
                      st.integers(1000, 10_000)),
            st.builds(_with, valid, field_name, st.integers(10 ** 300, 10 ** (INT_DIGITS - 1))),
            huge_text(),
        ),
        "deep": st.one_of(
            st.builds(_with, valid, field_name, deep_values()),
            st.builds(_with, valid, extra_key, deep_values()),
            deep_values().filter(lambda v: isinstance(v, dict)),
            st.builds(nested, st.integers(50, 3000), st.just("x"), st.sampled_from(fields)),
        ),
        "non-JSON value": st.one_of(
            st.builds(_with, valid, field_name, non_json_values()),
            st.builds(_with, valid, extra_key, non_json_values()),
            st.builds(_with, valid, field_name, st.lists(non_json_values(), min_size=1,
                                                         max_size=3)),
            non_json_values(),
        ),
    }
    return of_kinds(kinds)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _deep_text(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def run_texts(model: type[BaseModel]) -> st.SearchStrategy[Case]:
    """``--input`` texts for ``sagaline run`` of a saga with ``model``, of every kind."""
    fields = list(model.model_fields)
    valid = valid_fields(model, for_json=True)
    field_name = st.sampled_from(fields)
    extra_key = st.one_of(text(1, 12), broken_text()).filter(
        lambda k: k not in model.model_fields)
    kinds: dict[str, st.SearchStrategy[str]] = {
        "valid": st.builds(lambda d, indent: json.dumps(d, indent=indent, ensure_ascii=indent
                                                        is None), valid,
                           st.sampled_from([None, 2])),
        "valid with extra fields": st.builds(
            lambda d, extra: _dumps({**extra, **d}), valid,
            st.dictionaries(extra_key, json_values(), min_size=1, max_size=4)),
        "missing or invalid field": invalid_fields(model, for_json=True).map(_dumps),
        "wrong type": st.builds(_with, valid, field_name, json_values()).map(_dumps),
        "odd shape": st.one_of(
            json_values().filter(lambda v: not isinstance(v, dict)).map(_dumps),
            valid.map(lambda d: _dumps(list(d.items()))), st.just("null"), st.just("[]"),
            valid.map(lambda d: _dumps(_dumps(d))),
        ),
        "invalid JSON": st.one_of(
            text(0, 30), st.sampled_from(["", " ", "-", "{", "}", "{'tag': 'x'}", "{,}",
                                          '{"tag": "x",}', "{tag: x}", "\x00", "\ufeff{}",
                                          '{"tag": "\\x41"}', '{"tag": "\\ud800"', "undefined",
                                          "01", "1.", ".5", "+1", "--1", "{}{}", "[1,]"]),
            st.builds(lambda d, cut: _dumps(d)[:cut], valid, st.integers(0, 40)),
        ),
        "non-JSON tokens": st.builds(
            lambda d, key, token: _dumps(d)[:-1] + f', "{key}": {token}}}', valid,
            st.sampled_from(["x", *fields]),
            st.sampled_from(["NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udfff"',
                             '"\\u0000"', "1e400", "-1e400", "1e-400", "true", "null"])),
        "huge": st.one_of(
            st.builds(_with, valid, field_name, huge_text()).map(_dumps),
            st.builds(_with, valid, field_name, st.builds(
                lambda v, n: [v] * n, json_values(1), st.integers(1000, 10_000))).map(_dumps),
            st.builds(lambda d, n: {**{f"k{i}": i for i in range(n)}, **d}, valid,
                      st.integers(1000, 10_000)).map(_dumps),
            st.builds(_with, valid, st.sampled_from([*fields, "x"]),
                      st.integers(10 ** 300, 10 ** (INT_DIGITS - 1))).map(_dumps),
            huge_text().map(_dumps),
        ),
        "deep": st.one_of(
            st.builds(_deep_text, st.integers(1, 200_000), st.sampled_from(["list", "dict"])),
            st.builds(lambda d, key, depth, kind: _dumps(d)[:-1] + f', "{key}": '
                      f"{_deep_text(depth, kind)}}}", valid, st.sampled_from(["x", *fields]),
                      st.integers(50, 100_000), st.sampled_from(["list", "dict"])),
        ),
    }
    return of_kinds(kinds)
