"""Ops routes: job statistics across tenants and the Prometheus exposition."""
