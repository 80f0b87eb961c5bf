"""Operator commands: read the store (read-only) while the service runs."""
