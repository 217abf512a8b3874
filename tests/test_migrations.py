"""The participants' schema is Alembic's: the migrations match the models, apply on SQLite
and PostgreSQL (also from two processes at once), and adopt a database made before them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from tasks.db import Database, alembic_config, make_engine, upgrade
from tests.conftest import ROOT
from tests.support.postgres import ThrowawayPostgres

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
"""The newest revision."""

THUNDERLINE_TABLES = {"nas_datasets", "nas_runs", "nas_trials", "nas_artifacts",
                      "nas_model_versions", "gate_users", "gate_magic_link_tokens",
                      "block_vaults", "block_storage",
                      "block_upm_snapshots", "block_snapshot_activations",
                      "link_communities", "link_memberships", "crown_drift_limits",
                      "crown_freeze_windows", "crown_approval_rules", "crown_approvals",
                      "bolt_upm_adapters", "bolt_adapter_changes"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    return server.create_database(f"empty_{os.getpid()}_{tmp_path.name[-12:].lower()}"
                                  .replace("-", "_"))


def revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version_num FROM alembic_version"))
                       .scalar_one())
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_models_schema(empty_url: str) -> None:
    """``alembic check``: after the migrations, autogenerate finds nothing to add."""
    engine = make_engine(empty_url)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert tables >= THUNDERLINE_TABLES and "orders" in tables
    command.check(alembic_config(empty_url))  # raises when models and migrations differ
    assert revision(empty_url) == HEAD
    engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(empty_url: str) -> None:
    """Workers starting together take the migration lock in turn; the second finds the
    schema up to date.
    """
    code = ("import sys; from tasks.db import Database; Database().configure(sys.argv[1])")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: subprocess.run(
            [sys.executable, "-c", code, empty_url], cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert revision(empty_url) == HEAD


def test_a_database_made_before_the_migrations_is_adopted_with_its_rows(tmp_path: Path
                                                                          ) -> None:
    """Tables of the baseline with no version table: marked as at the baseline, then
    brought up to date, their rows kept.
    """
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    command.upgrade(alembic_config(url), "0001")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("INSERT INTO customers (id, name) VALUES ('OLD-1', 'Old')"))
    db = Database()
    db.configure(url)
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM customers WHERE id = 'OLD-1'")
                                  ).scalar_one() == "Old"
    assert revision(url) == HEAD
    assert set(inspect(db.engine).get_table_names()) >= THUNDERLINE_TABLES
    db.dispose()
    engine.dispose()


def test_sagaline_db_upgrade_applies_the_migrations_from_the_command_line(tmp_path: Path
                                                                          ) -> None:
    """``sagaline db upgrade`` (as ``alembic upgrade head``) on the data folder's SQLite,
    then ``sagaline db current`` names the head.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAGALINE_DATA_DIR": str(tmp_path)}
    env.pop("SAGALINE_DATABASE_URL", None)
    sagaline = [sys.executable, "-m", "sagaline.cli"]
    done = subprocess.run([*sagaline, "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sagaline.db").exists()
    current = subprocess.run([*sagaline, "db", "current"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert f"{HEAD} (head)" in current.stdout
    missing = subprocess.run([*sagaline, "db", "upgrade", "--config", "nowhere.ini"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no Alembic configuration at nowhere.ini" in missing.stderr
