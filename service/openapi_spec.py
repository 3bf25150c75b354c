"""Render the OpenAPI document from the code (``make openapi`` writes openapi.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet

from service.app import create_app
from service.core.dispatch import RecordingDispatcher
from service.settings import Settings


def build_spec() -> dict[str, Any]:
    """The spec as the running app serves it; building it needs no Redis or broker."""
    settings = Settings(env="test", secret_key=Fernet.generate_key().decode())
    app = create_app(settings, dispatcher=RecordingDispatcher())
    with app.app_context():
        spec: dict[str, Any] = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    return spec


def render() -> str:
    return yaml.safe_dump(build_spec(), sort_keys=True, allow_unicode=True, width=100)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("openapi.yaml")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
