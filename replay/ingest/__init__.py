"""HTTP receivers and everything between raw request bytes and a validated ``Batch``."""
