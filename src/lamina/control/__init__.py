"""The registry of functions, versions, aliases, layers and their settings."""
