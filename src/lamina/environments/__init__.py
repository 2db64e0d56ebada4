"""Execution environments: lifecycle, Runtime API, and the pool per function version."""
