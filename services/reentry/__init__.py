"""The reentry service."""
