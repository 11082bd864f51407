"""Series names read by a PromQL expression, for the checks of dashboards and rules."""

from __future__ import annotations

import re

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
#: A function or aggregation applied: its name goes, its argument stays.
_CALL = re.compile(r"\b[A-Za-z_:][A-Za-z0-9_:]*\s*\(")
#: A name not inside a number or a duration (``1e-9``, ``5m``).
_NAME = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                       "ignoring", "group_left", "group_right"})


def series_names(expr: str) -> set[str]:
    """Metric and recorded-series names in ``expr``: label matchers, strings,
    ranges, grouping clauses, function names and keywords left out."""
    bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", "", expr)
    bare = _CALL.sub("(", _GROUPING.sub("", bare))
    return {w for w in _NAME.findall(bare) if w not in _KEYWORDS and not w.startswith("__")}
