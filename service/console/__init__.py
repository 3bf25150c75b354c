"""The ops console: a static web page served at ``/console`` that uses only the public API."""
