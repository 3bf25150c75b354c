"""Imports: copying an OpenAI-shaped account's fine-tuning history into Tuneline (DESIGN §15)."""
