"""Settings from the environment: typed values, defaults, and failures that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
