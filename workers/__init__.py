"""Celery workers: thin tasks that take ids, call one core use case and enqueue the next step."""
