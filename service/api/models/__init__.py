"""The Models resource: a tenant's fine-tuned models."""
