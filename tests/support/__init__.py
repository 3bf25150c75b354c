"""Helpers shared by the test suite: real Redis, real servers, real workers."""
