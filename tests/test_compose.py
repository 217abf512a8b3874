"""``docker-compose.yml`` and the ``Dockerfile``, checked without a Docker engine.

No Docker engine runs here, so the file is validated instead: it parses; it has every
service the deployment needs; each app service runs a command the image has (the image's
files are installed into a folder as the Dockerfile does, and each command is run from
there with ``--help``); and each service gets the environment it needs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("api", "worker", "training", "beat", "flower")
#: How each program the image has is run from the installed folder.
PROGRAMS = {"celery": ["-m", "celery"], "sagaline": ["-m", "sagaline.cli"]}


def dockerfile() -> tuple[list[tuple[list[str], str]], dict[str, str], list[str]]:
    """The Dockerfile's copies (sources, destination), ENV and RUN lines."""
    copies, env, runs = [], {}, []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "COPY":
            copies.append((words[1:-1], words[-1]))
        elif words[0] == "ENV":
            key, _, value = words[1].partition("=")
            env[key] = value
        elif words[0] == "RUN":
            runs.append(" ".join(words[1:]))
    return copies, env, runs


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /app and its installed packages, as the Dockerfile makes them."""
    root = tmp_path_factory.mktemp("image")
    app = root / "app"
    app.mkdir()
    copies, _, runs = dockerfile()
    for sources, destination in copies:
        for source in sources:
            target = app / (source if destination in ("./", ".") else destination)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target)
    assert any(r.startswith("pip install") for r in runs)
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                "--target", str(root / "site"), str(app)],
                               cwd=root, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root


def run_in_image(image: Path, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the image from its installed folder, not from this checkout."""
    _, image_env, _ = dockerfile()
    environment = {
        "PATH": "/usr/bin:/bin", "PYTHONPATH": str(image / "site"), "HOME": str(image),
        **{k: v.replace("/app/", f"{image / 'app'}/") for k, v in image_env.items()},
        "SAGALINE_DATA_DIR": str(image / "data"),
        "SAGALINE_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: nothing may connect
        **env,
    }
    work = image / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *PROGRAMS[argv[0]], *argv[1:]], cwd=work,
                          env=environment, capture_output=True, text=True, timeout=180)


def test_every_service_of_the_deployment_is_there() -> None:
    assert set(SERVICES) == {"redis", "postgres", *APP_SERVICES}
    redis = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for name in ("redis", "postgres"):
        assert SERVICES[name]["healthcheck"]["test"]
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker  # it scales
    assert worker["deploy"]["replicas"] >= 2


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_service_reaches_redis_and_postgres_once_they_are_healthy(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"},
                                     "postgres": {"condition": "service_healthy"}}
    env = service["environment"]
    assert env["SAGALINE_REDIS_URL"] == "redis://redis:6379/0"
    assert re.fullmatch(r"postgresql\+psycopg://sagaline:\$\{POSTGRES_PASSWORD:\?[^}]+\}"
                        r"@postgres:5432/sagaline", env["SAGALINE_DATABASE_URL"])
    assert env["SAGALINE_DATA_DIR"] == "/data" and "app-data:/data" in service["volumes"]


def test_secrets_come_from_the_environment_and_compose_refuses_to_start_without_them() -> None:
    """The API gets token hashes only, Flower its basic auth, PostgreSQL its password: each
    a required variable with a message, none written in the file.
    """
    required = {
        ("api", "SAGALINE_API_TOKEN_HASHES"), ("flower", "SAGALINE_FLOWER_BASIC_AUTH"),
        ("postgres", "POSTGRES_PASSWORD"),
    }
    for service, variable in required:
        value = SERVICES[service]["environment"][variable]
        assert re.fullmatch(rf"\$\{{{variable}:\?set [^}}]+\}}", value), value
    assert "SAGALINE_API_TOKENS" not in SERVICES["api"]["environment"]
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"\$\{(\w+)(:[?-])?", text):
        assert match.group(2) == ":?", f"${{{match.group(1)}}} has no message when unset"


def test_the_image_installs_the_postgresql_driver_the_services_use() -> None:
    _, _, runs = dockerfile()
    install = next(r for r in runs if r.startswith("pip install"))
    assert ".[postgresql]" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["postgresql"]
    assert any(e.startswith("psycopg") for e in extras)


def test_the_image_runs_from_its_own_files(image: Path) -> None:
    """Installed as the Dockerfile installs it, away from this checkout, the app loads:
    its taxonomy, its migrations (applied to a fresh database) and its sagas.
    """
    where = run_in_image(image, ["sagaline", "sagas", "--json"])
    assert where.returncode == 0, where.stderr
    assert {s["name"] for s in yaml.safe_load(where.stdout)} >= {
        "order_processing", "user_provisioning", "upm_activation", "cerebros_nas"}
    origin = subprocess.run(
        [sys.executable, "-c", "from importlib.util import find_spec\n"
         "for name in ('config', 'sagaline', 'sagas', 'tasks'): print(find_spec(name).origin)"],
        cwd=image, capture_output=True, text=True,
        env={"PYTHONPATH": str(image / "site"), "PATH": "/usr/bin:/bin"}, check=True)
    assert all(line.startswith(str(image / "site")) for line in origin.stdout.split())


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_command_is_one_the_image_has(image: Path, name: str) -> None:
    argv = shlex.split(SERVICES[name]["command"])
    assert argv[0] in PROGRAMS, f"{name} runs {argv[0]}, which the image does not have"
    if argv[0] == "celery":
        assert argv[1:3] == ["-A", "config"], "the app module is config"
    result = run_in_image(image, [*argv, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage" in result.stdout
