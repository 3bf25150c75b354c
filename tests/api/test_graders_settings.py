"""The python grader's settings: read from TUNELINE_* variables, off by default, bad values named."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError


def test_python_graders_are_off_by_default():
    settings = Settings.from_env({"TUNELINE_ENV": "test"})
    assert settings.python_grader_enabled is False
    assert (settings.python_grader_timeout_s, settings.python_grader_memory_mb) == (30.0, 2048)


def test_python_grader_settings_from_env():
    settings = Settings.from_env(
        {
            "TUNELINE_ENV": "test",
            "TUNELINE_PYTHON_GRADER_ENABLED": "true",
            "TUNELINE_PYTHON_GRADER_TIMEOUT_S": "2.5",
            "TUNELINE_PYTHON_GRADER_MEMORY_MB": "512",
        }
    )
    assert settings.python_grader_enabled is True
    assert (settings.python_grader_timeout_s, settings.python_grader_memory_mb) == (2.5, 512)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TUNELINE_PYTHON_GRADER_ENABLED", "maybe"),
        ("TUNELINE_PYTHON_GRADER_TIMEOUT_S", "0"),
        ("TUNELINE_PYTHON_GRADER_MEMORY_MB", "8"),
    ],
)
def test_bad_values_name_the_variable(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"TUNELINE_ENV": "test", name: raw})
