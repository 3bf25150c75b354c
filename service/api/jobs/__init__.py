"""The Fine-tuning jobs resource (OpenAI-compatible, with Tuneline extensions)."""
