"""Held-out evaluation of fine-tuned models: metrics (framework-free) and the evaluating stage."""
