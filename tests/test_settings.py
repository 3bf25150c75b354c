"""Settings from the environment: typed values, defaults, and failures that name the variable."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service import taskqueue
from service.settings import Settings, SettingsError

BASE = {"TUNELINE_ENV": "test"}


def test_local_model_roots_default_to_the_data_dir() -> None:
    settings = Settings.from_env({**BASE, "TUNELINE_DATA_DIR": "/srv/tuneline"})
    assert settings.model_roots == (Path("/srv/tuneline/models").resolve(),)


def test_local_model_roots_are_a_path_list() -> None:
    settings = Settings.from_env(
        {**BASE, "TUNELINE_LOCAL_MODEL_ROOTS": f"/models{os.pathsep}/mnt/hf{os.pathsep}"}
    )
    assert settings.model_roots == (Path("/models"), Path("/mnt/hf"))


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="TUNELINE_TRAIN_LEASE_S"):
        Settings.from_env({**BASE, "TUNELINE_TRAIN_LEASE_S": "soon"})


def test_every_field_is_read_from_its_own_variable() -> None:
    """One declaration per setting: each field parses ``TUNELINE_<FIELD>`` into its type."""
    settings = Settings.from_env(
        {
            **BASE,
            "TUNELINE_PORT": "9001",
            "TUNELINE_METRICS_ENABLED": "yes",
            "TUNELINE_POLL_INTERVAL_S": "2.5",
            "TUNELINE_DATA_DIR": "/srv/x",
            "TUNELINE_DEFAULT_PROVIDER": " Sandbox ",
            "TUNELINE_AUTH_CACHE_S": "0",
            "TUNELINE_READ_CACHE_S": "0",
            "TUNELINE_VISIBILITY_TIMEOUT_S": "6",
        }
    )
    assert (settings.port, settings.metrics_enabled, settings.poll_interval_s) == (9001, True, 2.5)
    assert (settings.data_dir, settings.default_provider) == (Path("/srv/x"), "sandbox")
    assert (settings.auth_cache_s, settings.read_cache_s, settings.visibility_timeout_s) == (0.0, 0.0, 6)
    assert Settings.from_env(BASE) == Settings(env="test")


def test_openai_key_falls_back_to_the_providers_own_variable() -> None:
    assert Settings.from_env({**BASE, "OPENAI_API_KEY": "sk-a"}).openai_api_key == "sk-a"
    both = {**BASE, "OPENAI_API_KEY": "sk-a", "TUNELINE_OPENAI_API_KEY": "sk-b"}
    assert Settings.from_env(both).openai_api_key == "sk-b"
    assert Settings.from_env({**BASE, "OPENAI_API_KEY": "sk-a", "TUNELINE_OPENAI_API_KEY": ""}).openai_api_key


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("TUNELINE_PORT", "0", "must be >= 1"),
        ("TUNELINE_PORT", "eighty", "must be an integer"),
        ("TUNELINE_METRICS_ENABLED", "maybe", "must be a boolean"),
        ("TUNELINE_EVAL_RATE_PER_S", "0", "must be > 0"),
        ("TUNELINE_POLL_RATE_PER_S", "-1", "must be >= 0"),
        ("TUNELINE_AUTH_CACHE_S", "-1", "must be >= 0"),
        ("TUNELINE_READ_CACHE_S", "-1", "must be >= 0"),
        ("TUNELINE_DEFAULT_PROVIDER", "aws", "must be one of"),
        ("TUNELINE_ENV", "staging", "must be one of"),
        ("TUNELINE_TRAIN_DEVICE", "tpu", "cuda:N"),
        ("TUNELINE_REDIS_URL", "http://x", "redis://"),
        ("TUNELINE_SECRET_KEY", "short", "Fernet"),
        ("TUNELINE_TRAIN_EXECUTOR", "slurm", "must be one of process, ray"),
        ("TUNELINE_RAY_ADDRESS", "ray-head:6379", "dashboard's URL"),
    ],
)
def test_each_bad_value_names_its_variable(variable: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}.*{message}"):
        Settings.from_env({**BASE, variable: raw})


def test_keyword_construction_and_replace_keep_working() -> None:
    settings = Settings(env="test", redis_url="redis://127.0.0.1:1/2", port=9)
    assert dataclasses.replace(settings, port=10).port == 10
    with pytest.raises(SettingsError, match="TUNELINE_PORT"):
        settings.with_overrides(port=0)
    assert "secret_key" not in repr(Settings(env="test", secret_key="x"))


def test_production_needs_the_secret_key_and_refuses_loopback_webhooks() -> None:
    with pytest.raises(SettingsError, match="TUNELINE_SECRET_KEY is required in production"):
        Settings.from_env({})
    key = Fernet.generate_key().decode()
    with pytest.raises(SettingsError, match="TUNELINE_WEBHOOK_ALLOW_LOOPBACK"):
        Settings.from_env({"TUNELINE_SECRET_KEY": key, "TUNELINE_WEBHOOK_ALLOW_LOOPBACK": "1"})


def test_dead_settings_are_gone() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert "stuck_after_s" not in names
    assert not hasattr(taskqueue, "VISIBILITY_TIMEOUT_S")


def test_keys_never_downgrades_production(tmp_path: Path) -> None:
    """``tuneline keys`` in production without a secret key fails naming the variable, and
    never falls back to development (which would drop every production check)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELINE_")}
    env["TUNELINE_ENV"] = "production"
    # Unreachable on purpose: the command must stop at the settings, before any Redis call.
    env["TUNELINE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "TUNELINE_SECRET_KEY is required in production" in done.stderr
    assert "Redis" not in done.stderr


def test_ray_storage_defaults_under_the_data_dir() -> None:
    settings = Settings.from_env({**BASE, "TUNELINE_DATA_DIR": "/srv/x"})
    assert settings.train_executor == "process" and settings.ray_address == ""
    assert settings.ray_storage_path == "/srv/x/ray"
    chosen = {**BASE, "TUNELINE_TRAIN_EXECUTOR": "Ray", "TUNELINE_RAY_ADDRESS": "http://ray-head:8265"}
    assert Settings.from_env(chosen).train_executor == "ray"
    assert Settings.from_env({**chosen, "TUNELINE_RAY_STORAGE": "s3://b/t"}).ray_storage_path == "s3://b/t"
