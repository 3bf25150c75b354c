"""Webhook signing secret and delivery log routes."""
