"""AWS's rest-json protocol, driven by botocore's service model.

Routes, request parsing, validation and response shapes all come from the model
that boto3 itself uses (`botocore/data/<service>/<version>/service-2.json`), so a
request that boto3 can build, Lamina can read, and a response Lamina writes, boto3
can parse. Nothing here knows what an operation does; handlers do (see
`api.operations`).
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping
from urllib.parse import parse_qsl

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from lamina.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    ValidationException,
)


@functools.cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    # Query parameters fixed by the requestUri, e.g. `?find=LayerVersion`.
    static_query: tuple[tuple[str, str], ...]


def _compile_route(operation: OperationModel) -> Route:
    uri = operation.http["requestUri"]
    path, _, query = uri.partition("?")
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{"):
            name = part[1:-1]
            if name.endswith("+"):
                regex += f"(?P<{name[:-1]}>.+)"
            else:
                regex += f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(part)
    static = tuple((k, v) for k, v in parse_qsl(query, keep_blank_values=True))
    return Route(operation, operation.http["method"], re.compile(regex + "/?$"), static)


_MATCHES_KEPT = 4096


class Router:
    """Finds the operation an HTTP request is for, as AWS's front end does."""

    def __init__(self, model: ServiceModel) -> None:
        routes = [_compile_route(model.operation_model(name)) for name in model.operation_names]
        # A requestUri with a fixed query (`/layers?find=LayerVersion`) must win over
        # the bare path (`/layers`), so those are tried first.
        self._routes = sorted(routes, key=lambda r: -len(r.static_query))
        # What recent requests matched: a warm function's Invoke names the same path
        # every time, and trying some 70 patterns in turn costs more than the lookup.
        self._matched: dict[tuple[str, str, tuple[tuple[str, str], ...]],
                            tuple[OperationModel, dict[str, str]] | None] = {}

    def match(
        self, method: str, path: str, query: Mapping[str, str]
    ) -> tuple[OperationModel, dict[str, str]] | None:
        key = (method, path, tuple(query.items()))
        try:
            found = self._matched[key]
        except KeyError:
            found = self._match(method, path, query)
            if len(self._matched) >= _MATCHES_KEPT:
                self._matched.clear()
            self._matched[key] = found
        return None if found is None else (found[0], dict(found[1]))

    def _match(
        self, method: str, path: str, query: Mapping[str, str]
    ) -> tuple[OperationModel, dict[str, str]] | None:
        for route in self._routes:
            if route.method != method:
                continue
            found = route.pattern.match(path)
            if found and all(query.get(k) == v for k, v in route.static_query):
                return route.operation, found.groupdict()
        return None


# -- reading a request ---------------------------------------------------------


def _scalar_from_text(shape: Shape, text: str, member: str) -> Any:
    """A URI, query or header value as the member's type; `member` names it in errors."""
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            # Digits only (int() would also take "1_000" and " 7"); range: see _failures.
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise ValueError(text)
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        raise ValidationException(
            f"1 validation error detected: Value '{text}' at '{_member_path(member)}' "
            f"failed to satisfy constraint: Member must be a number"
        ) from None
    if kind == "boolean":
        return text.lower() == "true"
    if kind == "blob":
        return text.encode()
    if kind == "list":
        return [_scalar_from_text(shape.member, text, member)]
    return text


def from_json(shape: Shape, value: Any) -> Any:
    """JSON body values to Python: base64 blobs to bytes, recursively."""
    if value is None:
        return None
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: from_json(shape.members[k], v) if k in shape.members else v
            for k, v in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [from_json(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: from_json(shape.value, v) for k, v in value.items()}
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidRequestContentException(
                f"Could not parse request body into json: {shape.name} is not valid base64"
            ) from None
    return value


@functools.lru_cache(maxsize=1024)
def _input_members(operation: OperationModel) -> tuple[tuple[str, Shape, str | None, str], ...]:
    """(name, shape, location, name on the wire) of each input member, read from the
    model once per operation rather than once per request."""
    shape = operation.input_shape
    if shape is None:
        return ()
    return tuple((name, member, member.serialization.get("location"),
                  member.serialization.get("name", name))
                 for name, member in shape.members.items())


def parse_request(
    operation: OperationModel,
    path_params: Mapping[str, str],
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """The operation's input as a dict of model member names to Python values."""
    shape = operation.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    payload_member = shape.serialization.get("payload")
    query_multi: dict[str, list[str]] = {}
    for key, value in query:
        query_multi.setdefault(key, []).append(value)
    for name, member, location, wire_name in _input_members(operation):
        if location == "uri":
            if wire_name in path_params:
                params[name] = _scalar_from_text(member, path_params[wire_name], name)
        elif location == "querystring":
            if wire_name in query_multi:
                values = query_multi[wire_name]
                if member.type_name == "list":
                    params[name] = [_scalar_from_text(member.member, v, name) for v in values]
                else:
                    params[name] = _scalar_from_text(member, values[0], name)
        elif location == "header":
            if wire_name in headers:
                params[name] = _scalar_from_text(member, headers[wire_name], name)
        elif location == "headers":
            prefix = wire_name.lower()
            found = {k[len(prefix):]: v for k, v in headers.items() if k.lower().startswith(prefix)}
            if found:
                params[name] = found
        elif name == payload_member:
            if member.type_name in ("blob", "string"):
                params[name] = body
            elif body:
                params[name] = from_json(member, _decode_json(body))
    if payload_member is None and body:
        params.update(body_members(shape, body))
    return params


def body_members(shape: Shape, body: bytes) -> dict[str, Any]:
    """The members of `shape` carried in a JSON object body."""
    document = _decode_json(body)
    if not isinstance(document, dict):
        raise InvalidRequestContentException("Could not parse request body into json")
    return {
        name: from_json(member, document[name])
        for name, member in shape.members.items()
        if member.serialization.get("location") is None and name in document
    }


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: {exc.args[0]}"
        ) from None
    except RecursionError:
        # Python's parser recurses per level; AWS's refuses deep documents too.
        raise InvalidRequestContentException(
            "Could not parse request body into json: Document nesting depth exceeds the "
            "maximum allowed"
        ) from None


# -- validating it against the model --------------------------------------------


def _member_path(name: str) -> str:
    return name[:1].lower() + name[1:]


@functools.lru_cache(maxsize=512)
def _pattern(regex: str) -> re.Pattern[str] | None:
    try:
        return re.compile(regex, re.DOTALL)
    except re.error:
        # A handful of Java-only constructs; such fields are checked by handlers.
        return None


def _shown(value: Any) -> str:
    """A value as AWS's (Java) validator prints it: lists as [a, b], doubles as 2.0."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > 256:
        return value[:256] + "..."
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return str(value)


def _shown_as(shape: Shape, value: Any) -> str:
    if shape.type_name in ("float", "double") and isinstance(value, (int, float)):
        return repr(float(value))
    return _shown(value)


def _all_constraints(shape: Shape, not_null: bool = True) -> list[str]:
    """Every constraint of a list's member or a map's key/value, as AWS lists them
    when one item breaks any: maxima first, then minima, pattern, enum, not null."""
    meta = shape.metadata
    kind = shape.type_name
    unit = "length" if kind in ("string", "blob", "list", "map") else "value"
    found = []
    if "max" in meta:
        found.append(f"Member must have {unit} less than or equal to {meta['max']}")
    if "min" in meta:
        found.append(f"Member must have {unit} greater than or equal to {meta['min']}")
    if kind == "string" and meta.get("pattern"):
        found.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    if kind == "string" and shape.enum:
        found.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    return [*found, "Member must not be null"] if not_null else found


_TYPES: dict[str, type | tuple[type, ...]] = {
    "structure": dict,
    "list": list,
    "map": dict,
    "string": str,
    "integer": int,
    "long": int,
    "boolean": bool,
    "blob": (bytes, str),
    "float": (int, float),
    "double": (int, float),
}
_CONTAINERS = ("structure", "list", "map")
# The Java types behind the model's integer and long: a value outside them can
# neither be stored (SQLite's integers are 64-bit) nor come from AWS.
_INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _value_at(shape: Shape, value: Any, path: str) -> str:
    """How AWS names the offending value; never the value itself when it is sensitive."""
    if shape.metadata.get("sensitive"):
        return f"Value at '{path}'"
    if isinstance(value, dict):
        # Java's Map.toString, which is what AWS prints.
        shown = ", ".join(f"{k}={_shown_as(shape.value, v)}" for k, v in value.items())
        return f"Value '{{{shown}}}' at '{path}'"
    return f"Value '{_shown(value)}' at '{path}'"


def _failures(shape: Shape, value: Any, enums: bool = True) -> list[str]:
    """The constraints of shape itself (type, length, range, enum, pattern) value breaks."""
    kind = shape.type_name
    meta = shape.metadata
    expected = _TYPES.get(kind)
    if expected is not None and (
        not isinstance(value, expected) or (kind in ("integer", "long") and isinstance(value, bool))
    ):
        return [f"Member must be of type {kind}"]
    failed = []
    if kind in ("string", "blob", "list", "map"):
        if "min" in meta and len(value) < meta["min"]:
            failed.append(f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            failed.append(f"Member must have length less than or equal to {meta['max']}")
    elif kind in ("integer", "long", "float", "double"):
        type_min, type_max = _INTEGER_RANGES.get(kind, (None, None))
        low = meta.get("min", type_min)
        high = meta.get("max", type_max)
        if low is not None and value < low:
            failed.append(f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            failed.append(f"Member must have value less than or equal to {high}")
    if kind == "string":
        if enums and shape.enum and value not in shape.enum:
            failed.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        regex = meta.get("pattern")
        compiled = _pattern(regex) if regex else None
        if compiled is not None and not compiled.fullmatch(value):
            failed.append(f"Member must satisfy regular expression pattern: {regex}")
    return failed


def _check(shape: Shape, value: Any, path: str, problems: list[str], enums: bool) -> None:
    failed = _failures(shape, value, enums)
    problems.extend(f"{_value_at(shape, value, path)} failed to satisfy constraint: {c}" for c in failed)
    kind = shape.type_name
    if kind in _CONTAINERS and not isinstance(value, _TYPES[kind]):
        return
    if kind == "structure":
        for required in shape.metadata.get("required", []):
            if value.get(required) is None:
                problems.append(
                    f"Value null at '{_member_path(required) if not path else path + '.' + _member_path(required)}' "
                    "failed to satisfy constraint: Member must not be null"
                )
        for name, member_value in value.items():
            if name in shape.members and member_value is not None:
                child = _member_path(name) if not path else f"{path}.{_member_path(name)}"
                _check(shape.members[name], member_value, child, problems, enums)
    elif kind == "list":
        if shape.member.type_name not in _CONTAINERS:
            # AWS reports a list of scalars once, as a whole, with every constraint
            # of its members; a list of runtimes with just the enum.
            if any(_failures(shape.member, item, enums) for item in value):
                constraint = (
                    f"Member must satisfy enum value set: [{', '.join(shape.member.enum)}]"
                    if shape.member.name == "Runtime"
                    else f"Member must satisfy constraint: [{', '.join(_all_constraints(shape.member))}]"
                )
                problems.append(f"{_value_at(shape, value, path)} failed to satisfy constraint: {constraint}")
            return
        for index, item in enumerate(value):
            _check(shape.member, item, f"{path}.{index + 1}.member", problems, enums)
    elif kind == "map":
        # AWS reports a map's bad keys (and scalar values) once, for the whole map:
        # "Map keys must satisfy constraint: [Member must satisfy ...]".
        for part, part_shape, items in (("keys", shape.key, value.keys()), ("value", shape.value, value.values())):
            if part_shape.type_name in _CONTAINERS:
                continue
            failures = [_failures(part_shape, item, enums) for item in items]
            if any(failures):
                type_errors = [f for f in failures if f and f[0].startswith("Member must be of type")]
                # AWS lists a broken type alone; otherwise every constraint, with "not
                # null" for numbers only (keys and strings: as its recorded answers show).
                listed = type_errors[0] if type_errors else _all_constraints(
                    part_shape, not_null=part == "value" and part_shape.type_name not in ("string", "blob"))
                problems.append(
                    f"{_value_at(shape, value, path)} failed to satisfy constraint: "
                    f"Map {part} must satisfy constraint: [{', '.join(listed)}]"
                )
        if shape.value.type_name in _CONTAINERS:
            for key, item in value.items():
                _check(shape.value, item, f"{path}.{key}.member", problems, enums)


def validate(operation: OperationModel, params: dict[str, Any], enums: bool = True) -> None:
    """Raise ValidationException, worded like AWS's, if params break the model."""
    if operation.input_shape is None:
        return
    runtime = operation.input_shape.members.get("Runtime")
    value = params.get("Runtime")
    if runtime is not None and runtime.enum and isinstance(value, str) and value not in runtime.enum:
        # Lambda checks a function's runtime itself, before the model, and says so
        # with its own exception and wording (no count, no quotes).
        raise InvalidParameterValueException(
            f"Value {value} at 'runtime' failed to satisfy constraint: Member must satisfy "
            f"enum value set: [{', '.join(runtime.enum)}]"
        )
    problems: list[str] = []
    _check(operation.input_shape, params, "", problems, enums)
    if problems:
        raise ValidationException.of(problems)


# -- writing the response -------------------------------------------------------


def to_json(shape: Shape | None, value: Any) -> Any:
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        return {
            k: to_json(shape.members.get(k), v) for k, v in value.items() if v is not None
        }
    if kind == "list":
        return [to_json(shape.member, v) for v in value]
    if kind == "map":
        return {k: to_json(shape.value, v) for k, v in value.items()}
    if kind == "blob" and isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if kind == "timestamp" and isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


@dataclass
class SerializedResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes
    # An event stream payload (InvokeWithResponseStream): encoded messages, sent as
    # they come instead of body.
    stream: AsyncIterator[bytes] | None = None


def serialize_response(operation: OperationModel, output: Mapping[str, Any]) -> SerializedResponse:
    status = int(operation.http.get("responseCode", 200))
    headers: dict[str, str] = {}
    shape = operation.output_shape
    if shape is None:
        return SerializedResponse(status, headers, b"")
    payload_member = shape.serialization.get("payload")
    body_fields: dict[str, Any] = {}
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    for name, value in output.items():
        if value is None:
            continue
        member = shape.members.get(name)
        if member is None:
            continue
        location = member.serialization.get("location")
        if location == "header":
            headers[member.serialization.get("name", name)] = str(value)
        elif location == "statusCode":
            status = int(value)
        elif name == payload_member:
            if member.serialization.get("eventstream"):
                stream = value
            elif isinstance(value, (bytes, bytearray)):
                body = bytes(value)
            elif isinstance(value, str):
                body = value.encode()
            else:
                body = json.dumps(to_json(member, value)).encode()
        else:
            body_fields[name] = to_json(member, value)
    if stream is not None:
        return SerializedResponse(status, headers, b"", stream)
    if body is None:
        body = json.dumps(body_fields).encode() if (body_fields or payload_member is None) else b""
        headers.setdefault("Content-Type", "application/json")
    return SerializedResponse(status, headers, body)
