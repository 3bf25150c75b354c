"""The demo ``make run`` performs against the freshly started stack."""
