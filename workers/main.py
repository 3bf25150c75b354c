"""Celery entry point: ``celery -A workers.main worker`` / ``beat``."""

from __future__ import annotations

from service import logs
from service.settings import Settings
from service.taskqueue import CeleryDispatcher, make_celery
from workers import context, datasets, imports, inference, jobs, maintenance, training, webhooks

settings = Settings.from_env()
logs.configure(settings.log_level)
app = make_celery(settings)
context.configure(settings, CeleryDispatcher(app))
datasets.register(app)
maintenance.register(app)
jobs.register(app)
webhooks.register(app)
training.register(app)
inference.register(app)
imports.register(app)
