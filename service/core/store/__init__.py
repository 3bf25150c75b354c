"""Redis persistence: key names live in ``keys``; one repository module per aggregate."""

from service.core.store.base import Store, connect

__all__ = ["Store", "connect"]
