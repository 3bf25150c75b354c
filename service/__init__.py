"""Tuneline: a self-hosted fine-tuning job service."""
