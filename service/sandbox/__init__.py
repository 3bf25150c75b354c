"""The sandbox provider: an OpenAI-compatible fine-tuning simulator at /sandbox/v1 (nothing is trained)."""
