"""Strict marshmallow number fields shared by the API's schemas and the sandbox's (no Flask here)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma


class StrictInt(ma.fields.Integer):
    """An integer given as one: a string, a float or a boolean is refused, never coerced."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class StrictNumber(ma.fields.Float):
    """A number given as one (a string or a boolean is refused)."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, (bool, str)):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)
