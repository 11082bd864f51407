"""The lander service."""
