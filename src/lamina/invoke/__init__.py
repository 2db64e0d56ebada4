"""Turning "invoke F:qualifier with payload" into a result."""
