"""Parity scenarios: API call sequences with the answers real AWS Lambda gave.

Each module holds a list `SCENARIOS`; `tests/parity/test_parity.py` runs them all
against a real `lamina serve` with boto3. The expected values were recorded against
AWS (their origin is named in each scenario's `source`); ids, timestamps, account,
region, RevisionId and CodeSha256 are compared by presence only.
"""

from __future__ import annotations

import importlib
import pkgutil

from tests.parity.model import Scenario


def all_scenarios() -> list[Scenario]:
    found: list[Scenario] = []
    for module in pkgutil.iter_modules(__path__):
        found.extend(importlib.import_module(f"{__name__}.{module.name}").SCENARIOS)
    names = [s.name for s in found]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"scenario names must be unique: {sorted(duplicates)}"
    return found
