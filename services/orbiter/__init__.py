"""The orbiter service."""
