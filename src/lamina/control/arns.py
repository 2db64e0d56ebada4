"""Lambda and SQS ARNs, and the forms of FunctionName AWS accepts."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lamina.errors import InvalidParameterValueException, ResourceNotFoundException

# name | account:function:name | arn:aws:lambda:region:account:function:name, each
# optionally followed by :qualifier (a version number, $LATEST or an alias).
_FUNCTION_REF = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):)?"
    r"(?:(?P<account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9-_]{1,140})"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]{1,128}))?$"
)

_QUEUE_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[A-Za-z0-9_-]{1,80})$"
)


@dataclass(frozen=True)
class Region:
    region: str
    account_id: str

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def layer_arn(self, name: str, version: int | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{name}"
        return f"{arn}:{version}" if version is not None else arn

    def queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{name}"

    def function_ref(self, arn: str) -> FunctionRef | None:
        """The function (and qualifier) a full function ARN names in this region and
        account, else None. Unlike parse_function_ref, a bare name is not an ARN."""
        found = _FUNCTION_REF.match(arn)
        if found is None or (found["region"], found["account"]) != (self.region, self.account_id):
            return None
        return FunctionRef(found["name"], found["qualifier"])

    def queue_name(self, arn: str) -> str | None:
        """The name of the queue an SQS ARN names in this region and account, else None."""
        found = _QUEUE_ARN.match(arn)
        if found is None or (found["region"], found["account"]) != (self.region, self.account_id):
            return None
        return found["name"]


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None


@functools.lru_cache(maxsize=4096)
def parse_function_ref(value: str, region: Region, qualifier: str | None = None) -> FunctionRef:
    """Split any accepted FunctionName form into (name, qualifier).

    A qualifier both in the ARN and in the Qualifier parameter must agree, as on AWS.
    Remembered (a warm invocation resolves its function's name three times); what it
    refuses is not.
    """
    found = _FUNCTION_REF.match(value)
    if found is None:
        raise InvalidParameterValueException(f"Invalid function name or ARN: {value}")
    if found.group("region") and found.group("region") != region.region:
        # AWS's answer to an ARN from another region, type and wording.
        raise ResourceNotFoundException(
            f"Functions from '{found.group('region')}' are not reachable in this region "
            f"('{region.region}')"
        )
    if found.group("account") and found.group("account") != region.account_id:
        raise InvalidParameterValueException(
            f"The account {found.group('account')} in the ARN does not match this "
            f"account ({region.account_id})"
        )
    embedded = found.group("qualifier")
    if embedded and qualifier and embedded != qualifier:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(found.group("name"), embedded or qualifier)


# arn:aws:lambda:region:account:layer:name[:version]
_LAYER_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):layer:"
    r"(?P<name>[a-zA-Z0-9-_]{1,140})(?::(?P<version>[0-9]+))?$"
)


@dataclass(frozen=True)
class LayerRef:
    region: str
    account_id: str
    name: str
    version: int | None


def parse_layer_arn(value: str) -> LayerRef | None:
    """A layer or layer version ARN split up; None if it is not one."""
    found = _LAYER_ARN.match(value)
    if found is None:
        return None
    version = found.group("version")
    return LayerRef(found.group("region"), found.group("account"), found.group("name"),
                    int(version) if version is not None else None)


def layer_name(value: str) -> str:
    """LayerName as AWS takes it: a bare name or the layer's ARN."""
    ref = parse_layer_arn(value)
    return ref.name if ref is not None else value
