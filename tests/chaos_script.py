"""scripts/chaos.py loaded as the module ``chaos``, for the tests and the bench
that drive it (a script, not part of a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def _load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos", REPO / "scripts" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()
