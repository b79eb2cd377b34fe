"""Pocket Agent Server: drive the Claude Code CLI from a phone over a TLS WebSocket."""

__version__ = "0.1.0"
