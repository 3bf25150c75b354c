"""Tests of the local trainer (service/training): masks, the training child process, inference."""
