"""Backends: everything that differs between ways of running a job, behind one interface (DESIGN §11)."""
