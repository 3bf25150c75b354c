"""Completions for fine-tuned models (OpenAI-compatible)."""
