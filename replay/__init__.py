"""Replay: self-hosted session recording capture and replay."""

__version__ = "0.1.0"
