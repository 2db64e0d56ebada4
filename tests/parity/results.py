"""Which scenarios matched AWS in this session, for the summary line."""

from __future__ import annotations

OUTCOMES: dict[str, bool] = {}


def record(name: str, matched: bool) -> None:
    OUTCOMES[name] = matched
