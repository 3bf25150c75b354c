"""The Files resource (OpenAI-compatible)."""
