"""The sandbox provider's HTTP face: an OpenAI-compatible fine-tuning simulator at /sandbox/v1."""
