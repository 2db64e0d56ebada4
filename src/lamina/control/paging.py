"""One page of a listing, as Lambda's List* operations return them.

Each listing filters its ordered records to those after the caller's Marker (the
order differs: names, version numbers, newest first) and hands the rest here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

# Lambda's page size when MaxItems is not given (and ListFunctions' ceiling).
PAGE_SIZE = 50

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # The Marker of the next page; None on the last one.
    next_marker: str | None


def page_of(following: Sequence[T], max_items: int | None, marker_of: Callable[[T], str],
            ceiling: int | None = None) -> Page[T]:
    """The first page of `following` (the records after the caller's marker)."""
    size = max_items or PAGE_SIZE
    if ceiling is not None:
        size = min(size, ceiling)
    items = list(following[:size])
    more = len(following) > size
    return Page(items, marker_of(items[-1]) if more and items else None)
