"""The Imports resource: copy a provider account's fine-tuning history into Tuneline."""
