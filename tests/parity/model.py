"""What a parity scenario is: calls, waits, and the answers AWS gave to them.

Strings in parameters and expectations may hold placeholders, replaced per
scenario run (every run gets fresh resource names):

    <fn>        the scenario's function name      <fn_arn>     its unqualified ARN
    <layer>     the scenario's layer name         <layer_arn>  the layer's ARN
    <region>    the server's region               <account>    the server's account
    <role>      an execution role ARN
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import make_zip


class Present:
    """A value AWS always returns but that differs per call (ids, dates, digests)."""

    def __repr__(self) -> str:
        return "<present>"


class Absent:
    """A member AWS leaves out of this response."""

    def __repr__(self) -> str:
        return "<absent>"


ANY = Present()
ABSENT = Absent()


@dataclass(frozen=True)
class Matches:
    """A string matching a regular expression (fullmatch), e.g. with a request id inside."""

    pattern: str

    def __repr__(self) -> str:
        return f"<matches {self.pattern!r}>"


@dataclass(frozen=True)
class Prefix:
    """A string that starts with this text: AWS's enum listings change with every new
    runtime, so messages quoting them are compared up to the listing."""

    text: str

    def __repr__(self) -> str:
        return f"<starts with {self.text!r}>"


@dataclass(frozen=True)
class Including:
    """A list holding items that match these (a listing shared with other scenarios)."""

    items: list[Any]


@dataclass(frozen=True)
class Call:
    """One API call and AWS's answer: an error (code, HTTP status, message), or a
    response whose listed members must equal AWS's (unlisted ones are not compared)."""

    operation: str
    params: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, int, Any] | None = None
    response: dict[str, Any] | None = None
    status: int | None = None


@dataclass(frozen=True)
class Wait:
    """A boto3 waiter, run to success (as tools such as Terraform do after a write)."""

    waiter: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    # Where AWS's answers come from: a recorded test and snapshot key, or a reference page.
    source: str
    steps: list[Call | Wait]
    # Why Lamina does not give AWS's answer yet; the scenario then must fail.
    known_difference: str | None = None


HANDLER_CODE = make_zip({"handler.py": "def handler(event, context):\n    return event\n"})
ROLE = "arn:aws:iam::000000000000:role/lambda-role"


def function(**overrides: Any) -> dict[str, Any]:
    """CreateFunction parameters for the scenario's function (<fn>); overrides win."""
    return {
        "FunctionName": "<fn>",
        "Runtime": "python3.12",
        "Role": "<role>",
        "Handler": "handler.handler",
        "Code": {"ZipFile": HANDLER_CODE},
        **overrides,
    }


def create(**overrides: Any) -> list[Call | Wait]:
    """Create <fn> and wait until it is Active, as every recorded test does first."""
    return [Call("CreateFunction", function(**overrides)),
            Wait("function_active_v2", {"FunctionName": "<fn>"})]


def not_found(qualified: str) -> tuple[str, int, str]:
    return ("ResourceNotFoundException", 404, f"Function not found: {qualified}")


def placeholder_pattern() -> re.Pattern[str]:
    return re.compile(r"<(fn_arn|fn|layer_arn|layer|region|account|role)>")
