"""Training engine of the ``local`` provider: torch/transformers/peft/trl, run in a child process.

Only the child process (``python -m service.training.run``), the inference workers and the
``tuneline models`` command import this package; the API and ``service.core`` never do.
"""
