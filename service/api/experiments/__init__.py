"""Experiments: several candidates trained and evaluated side by side."""
