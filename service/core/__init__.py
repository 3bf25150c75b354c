"""Tuneline's domain: plain Python, no web or queue framework."""
