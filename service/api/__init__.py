"""HTTP adapters: one package per resource, thin flask-smorest views over core use cases."""
