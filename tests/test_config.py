"""Configuration: settings from the environment, JSON only, the embedded Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from config.settings import Settings, unknown_variables
from sagaline import ConfigurationError, EmbeddedRedis, RedisStore, Sagaline
from sagaline.store.urls import backend_url, broker_url


def test_a_misspelled_setting_is_named_with_a_suggestion() -> None:
    problems = unknown_variables({"SAGALINE_REDIS_ULR": "x", "SAGALINE_DATA_DIR": "y"})
    assert problems == [
        "SAGALINE_REDIS_ULR is not a Sagaline setting; did you mean SAGALINE_REDIS_URL?"
    ]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_REDIS_URL", "redis://user:secret@localhost:6379/3")
    monkeypatch.setenv("SAGALINE_RETENTION", "PT1H")
    settings = Settings()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://user:secret@localhost:6379/3"
    assert settings.retention.total_seconds() == 3600
    assert "secret" not in repr(settings)  # the URL may carry a password: never shown


def test_the_key_prefix_must_end_with_a_colon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_KEY_PREFIX", "nocolon")
    with pytest.raises(ValueError, match="key_prefix"):
        Settings()


def test_the_app_speaks_json_only() -> None:
    import config

    assert config.app.conf.accept_content == ["json"]
    assert config.app.conf.task_serializer == "json"
    assert config.app.conf.task_acks_late is True
    assert config.app.conf.task_reject_on_worker_lost is True
    assert config.app.conf.worker_prefetch_multiplier == 1


SAFE = {"task_serializer": "json", "result_serializer": "json", "accept_content": ["json"],
        "result_accept_content": ["json"]}


@pytest.mark.parametrize(("setting", "unsafe"), [
    ("task_serializer", "pickle"), ("result_serializer", "pickle"),
    ("accept_content", ["json", "pickle"]), ("result_accept_content", ["json", "pickle"]),
])
def test_the_engine_refuses_an_app_that_accepts_pickle(
    store: RedisStore, setting: str, unsafe: object
) -> None:
    """Each of the four settings alone, pickle in it, is refused, and named."""
    app = Celery("unsafe", set_as_current=False)
    app.conf.update({**SAFE, setting: unsafe})
    with pytest.raises(ConfigurationError, match=f"pickle.*{setting}"):
        Sagaline(app, store)


def test_the_engine_accepts_an_app_that_speaks_json_only(store: RedisStore) -> None:
    """The control for the refusals above: the same app with JSON everywhere is taken."""
    app = Celery("safe", set_as_current=False)
    app.conf.update(SAFE)
    own = RedisStore(store.client, prefix=store.prefix)  # the engine sets its fault flag
    assert Sagaline(app, own).app is app


def test_socket_urls_are_spelled_for_each_client() -> None:
    assert broker_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert backend_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert broker_url("redis://h:1/2") == "redis://h:1/2"


def test_the_embedded_redis_starts_once_and_stops(tmp_path: Path) -> None:
    """Two starts give one server (the second finds it running); stop ends it."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    assert not server.is_running()
    try:
        assert server.start() is True
        assert server.start() is False
        assert server.is_running()
        store = RedisStore.from_url(server.url)
        assert store.client.ping()
        store.client.close()
    finally:
        server.stop()
    assert not server.is_running()


def test_telemetry_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics are off and transition logs on unless the environment says otherwise."""
    assert Settings().metrics_port is None
    assert Settings().otel is False
    assert Settings().log_transitions is True
    monkeypatch.setenv("SAGALINE_METRICS_PORT", "9464")
    monkeypatch.setenv("SAGALINE_OTEL", "true")
    monkeypatch.setenv("SAGALINE_OTEL_SPANS_FILE", "/tmp/spans.jsonl")
    settings = Settings()
    assert settings.metrics_port == 9464
    assert settings.otel is True
    assert settings.otel_spans_file == Path("/tmp/spans.jsonl")
    assert unknown_variables({"SAGALINE_METRIC_PORT": "1"}) == [
        "SAGALINE_METRIC_PORT is not a Sagaline setting; did you mean SAGALINE_METRICS_PORT?"
    ]
    monkeypatch.setenv("SAGALINE_METRICS_PORT", "0")
    with pytest.raises(ValueError, match="metrics_port"):
        Settings()
