"""Runtime clients that run inside execution environments, and the runtime catalog."""
