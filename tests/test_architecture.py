"""Architecture rules: import contracts, no connections at import, the spec does not drift."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_import_contracts_hold():
    result = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_modules_opens_no_connection():
    # Point everything at a closed port: an import-time connection would hang or fail.
    code = (
        "import importlib, pkgutil, service, workers.context\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    if m.name not in ('service.wsgi', 'service.devstack'):\n"
        "        importlib.import_module(m.name)\n"
        "import service.wsgi, workers.main\n"
        "print('ok')\n"
    )
    env = {"TUNELINE_ENV": "test", "TUNELINE_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_openapi_yaml_matches_the_code():
    from service.openapi_spec import render

    committed = (REPO / "openapi.yaml").read_text(encoding="utf-8")
    assert committed == render(), "openapi.yaml is stale: run `make openapi` and commit it"


def test_openapi_yaml_is_a_valid_spec():
    from openapi_spec_validator import validate

    validate(yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8")))


def test_docker_compose_defines_the_stack():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "beat"} <= set(services)
    redis_cmd = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis_cmd and "noeviction" in redis_cmd
    assert "healthcheck" in services["redis"]
    api_cmd = " ".join(map(str, services["api"]["command"]))
    assert api_cmd.startswith("gunicorn -c python:service.gunicorn_conf ")  # the one set of settings
    for name in ("api", "worker", "beat"):
        env = services[name]["environment"]
        assert env["TUNELINE_REDIS_URL"].startswith("redis://redis:")
        assert "TUNELINE_SECRET_KEY" in env
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "celery" in " ".join(map(str, services["worker"]["command"]))
    assert "beat" in " ".join(map(str, services["beat"]["command"]))


def test_docker_compose_ray_profile_is_a_head_and_a_worker_on_the_trainer_image():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    head, worker, trainer = services["ray-head"], services["ray-worker"], services["trainer"]
    assert head["profiles"] == worker["profiles"] == ["ray"]
    assert head["image"] == worker["image"] == trainer["image"]
    assert 'pip install ".[train,ray]"' in trainer["build"]["dockerfile_inline"]
    head_cmd = " ".join(map(str, head["command"]))
    assert head_cmd.startswith("ray start --head --block") and "--dashboard-host=0.0.0.0" in head_cmd
    assert "--include-dashboard=true" in head_cmd  # the Jobs API is served by the dashboard
    port = head_cmd.split("--port=")[1].split()[0]
    dashboard = head_cmd.split("--dashboard-port=")[1].split()[0]
    assert " ".join(map(str, worker["command"])).startswith(f"ray start --address=ray-head:{port} --block")
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert dashboard in " ".join(head["healthcheck"]["test"])
    # Every Ray node reads and writes the same data volume as the trainer (SPEC.json, data, outputs).
    assert (
        "data:/data" in head["volumes"]
        and "data:/data" in worker["volumes"]
        and "data:/data" in trainer["volumes"]
    )
    env = trainer["environment"]
    assert env["TUNELINE_RAY_ADDRESS"].endswith(f"http://ray-head:{dashboard}}}")
    assert env["TUNELINE_RAY_STORAGE"].endswith("/data/ray}")


def test_every_example_in_the_spec_matches_its_schema():
    from openapi_schema_validator import OAS30Validator

    spec = yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8"))
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            bodies = [operation.get("requestBody", {})]
            bodies += [r for r in operation.get("responses", {}).values() if "$ref" not in r]
            for body in bodies:
                for media in body.get("content", {}).values():
                    if "example" not in media:
                        continue
                    schema = {**media["schema"], "components": spec["components"]}
                    errors = list(OAS30Validator(schema).iter_errors(media["example"]))
                    assert not errors, f"{method.upper()} {path}: {errors[0].message}"
                    checked += 1
    assert checked >= 15


TEXT_SUFFIXES = {"", ".py", ".js", ".mjs", ".yml", ".yaml", ".toml"}
# The team's folder beside a checkout; spelled in parts so that this file does not name it.
OUTSIDE = ("../" + "sha" + "red", '"sha' + 'red" / "data"')


def test_nothing_reads_outside_the_repository():
    """A fresh clone has nothing beside it: code, tests and the Makefile never refer to the folder
    beside a checkout (sample data lives in tests/data and service/demo)."""
    root = REPO
    offenders = []
    for top in ("service", "workers", "tests", "Makefile", ".ci"):
        paths = [root / top] if (root / top).is_file() else sorted((root / top).rglob("*"))
        for path in paths:
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(needle in text for needle in OUTSIDE):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_no_log_call_passes_a_reserved_log_record_field_in_extra():
    """``extra={"created": ...}`` raises KeyError inside the logging call: a Ray submit crashed its
    train task that way after the Ray job was made. Every ``extra=`` dict literal is checked."""
    reserved = set(logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__) | {"message", "asctime"}
    found = []
    for path in [*(REPO / "service").rglob("*.py"), *(REPO / "workers").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    found += [
                        f"{path.relative_to(REPO)}:{node.lineno}: {k.value}"
                        for k in kw.value.keys
                        if isinstance(k, ast.Constant) and k.value in reserved
                    ]
    assert found == []
