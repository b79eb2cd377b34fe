"""End-to-end tests: the real daemon in a subprocess, real TLS clients."""
