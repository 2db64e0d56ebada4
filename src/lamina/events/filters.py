"""Lambda's event filter patterns (FilterCriteria), the EventBridge pattern syntax.

A pattern is a JSON object whose leaves are arrays of what a value may be: a literal
(string, number, true/false, null), or one of the comparison objects `prefix`,
`suffix`, `equals-ignore-case`, `anything-but` (a value, a list, or a prefix/suffix),
`numeric` (up to two comparisons, e.g. [">", 0, "<=", 5]), `exists` and `wildcard`.
`$or` at any level takes a list of patterns. A field matches when any of its values
(a list in the event counts as several) matches any entry; a missing field matches
only `{"exists": false}`. A record matches a FilterCriteria when any of its filters
matches.

No maintained Python implementation of this syntax exists (the one on the package
index wraps the Java library), so this is a compact one of our own.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from lamina.errors import InvalidParameterValueException

INVALID = "Invalid filter pattern definition."
_OPERATORS = {"prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists",
              "wildcard", "cidr"}
_COMPARISONS = {"<", "<=", "=", ">", ">="}
_MISSING = object()


def _invalid() -> InvalidParameterValueException:
    return InvalidParameterValueException(INVALID)


def parse_pattern(text: Any) -> dict[str, Any]:
    """The pattern a Filter's Pattern string holds; InvalidParameterValueException if
    it is not one, with AWS's message."""
    if not isinstance(text, str):
        raise _invalid()
    try:
        pattern = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid() from None
    if not isinstance(pattern, dict):
        raise _invalid()
    _check_object(pattern)
    return pattern


def _check_object(pattern: dict[str, Any]) -> None:
    for key, value in pattern.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise _invalid()
            for branch in value:
                if not isinstance(branch, dict):
                    raise _invalid()
                _check_object(branch)
        elif isinstance(value, dict):
            _check_object(value)
        elif isinstance(value, list):
            for entry in value:
                _check_entry(entry)
        else:
            raise _invalid()


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict):
        if isinstance(entry, list):
            raise _invalid()
        return
    if len(entry) != 1:
        raise _invalid()
    (operator, operand), = entry.items()
    if operator not in _OPERATORS:
        raise _invalid()
    if operator in ("prefix", "suffix"):
        if isinstance(operand, dict):
            if list(operand) != ["equals-ignore-case"] or not isinstance(operand["equals-ignore-case"], str):
                raise _invalid()
        elif not isinstance(operand, str):
            raise _invalid()
    elif operator in ("equals-ignore-case", "wildcard", "cidr"):
        if not isinstance(operand, str):
            raise _invalid()
    elif operator == "exists":
        if not isinstance(operand, bool):
            raise _invalid()
    elif operator == "anything-but":
        if isinstance(operand, dict):
            if len(operand) != 1 or next(iter(operand)) not in ("prefix", "suffix", "equals-ignore-case"):
                raise _invalid()
        elif isinstance(operand, list):
            if not operand or any(isinstance(v, (dict, list)) for v in operand):
                raise _invalid()
    elif operator == "numeric":
        if not isinstance(operand, list) or len(operand) not in (2, 4):
            raise _invalid()
        for i in range(0, len(operand), 2):
            if operand[i] not in _COMPARISONS or isinstance(operand[i + 1], bool) \
                    or not isinstance(operand[i + 1], (int, float)):
                raise _invalid()


def matches(pattern: dict[str, Any], event: Any) -> bool:
    """Whether the event (a decoded JSON document) matches the pattern."""
    if not isinstance(event, dict):
        return False
    for key, wanted in pattern.items():
        if key == "$or":
            if not any(matches(branch, event) for branch in wanted):
                return False
            continue
        value = event.get(key, _MISSING)
        if isinstance(wanted, dict):
            if not isinstance(value, dict) or not matches(wanted, value):
                return False
        elif not _field_matches(wanted, value):
            return False
    return True


def _field_matches(entries: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for entry in entries:
        if isinstance(entry, dict) and "exists" in entry:
            present = value is not _MISSING and not isinstance(value, dict)
            if entry["exists"] == present:
                return True
            continue
        if value is _MISSING:
            continue
        if any(_entry_matches(entry, v) for v in values):
            return True
    return False


def _entry_matches(entry: Any, value: Any) -> bool:
    if not isinstance(entry, dict):
        if isinstance(entry, bool) or isinstance(value, bool) or entry is None or value is None:
            return entry is value or entry == value and type(entry) is type(value)
        if isinstance(entry, (int, float)) and isinstance(value, (int, float)):
            return float(entry) == float(value)
        return entry == value
    (operator, operand), = entry.items()
    if operator == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return all(_compare(value, operand[i], operand[i + 1]) for i in range(0, len(operand), 2))
    if not isinstance(value, str) and operator != "anything-but":
        return False
    if operator in ("prefix", "suffix"):
        if isinstance(operand, dict):
            operand, value = operand["equals-ignore-case"].lower(), value.lower()
        return value.startswith(operand) if operator == "prefix" else value.endswith(operand)
    if operator == "equals-ignore-case":
        return bool(value.lower() == operand.lower())
    if operator == "wildcard":
        return fnmatch.fnmatchcase(value, operand.replace("[", "[[]"))
    if operator == "cidr":
        import ipaddress
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(operand, strict=False)
        except ValueError:
            return False
    # anything-but
    if isinstance(operand, dict):
        return isinstance(value, str) and not _entry_matches(operand, value)
    excluded = operand if isinstance(operand, list) else [operand]
    return not any(_entry_matches(e, value) for e in excluded)


def _compare(value: float, operator: str, bound: float) -> bool:
    return {"<": value < bound, "<=": value <= bound, "=": value == bound,
            ">": value > bound, ">=": value >= bound}[operator]


def any_matches(patterns: list[dict[str, Any]], event: Any) -> bool:
    """FilterCriteria: no filters lets everything through; else any one must match."""
    return not patterns or any(matches(p, event) for p in patterns)
