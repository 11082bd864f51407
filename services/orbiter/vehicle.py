"""Orbiter state and transitions (placeholder motion until its physics is wired)."""

from __future__ import annotations

from services.kernel.placeholder import CircularOrbitCore


class OrbiterCore(CircularOrbitCore):
    name = "orbiter"
