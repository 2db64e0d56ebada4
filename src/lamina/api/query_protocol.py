"""AWS's query protocol: `POST /`, a form-encoded body `Action=<Operation>&Version=...`
with members flattened (`Dimensions.member.1.Name=...`), answered in XML.

CloudWatch speaks it to older SDKs and the AWS CLI v1 of before its move to JSON;
its newer clients send the same operations over the JSON protocol
(api/json_protocol.py). Both reach the same handlers: only parsing and the
answer's shape differ here, both driven by botocore's model of the service.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.model import OperationModel, ServiceModel, Shape
from starlette.responses import Response

from lamina.api import protocol
from lamina.errors import (
    InvalidParameterValueException,
    LambdaError,
    UnknownOperationException,
    ValidationException,
)

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class QueryService:
    # botocore's service name; also the handlers' registry key.
    name: str

    @property
    def model(self) -> ServiceModel:
        return protocol.service_model(self.name)

    @property
    def signing_name(self) -> str:
        metadata = self.model.metadata
        return str(metadata.get("signingName") or metadata["endpointPrefix"])

    @property
    def xml_namespace(self) -> str:
        return str(self.model.metadata.get("xmlNamespace", ""))


# The query protocol names no service in its headers; the only one served is
# CloudWatch, so a form-encoded POST / is for it (its Version is checked in the body).
SERVICE = QueryService("cloudwatch")


def is_query_request(method: str, path: str, content_type: str | None) -> bool:
    return method == "POST" and path == "/" and (content_type or "").startswith(FORM)


def resolve(form: Mapping[str, str]) -> OperationModel:
    """The operation a form's Action names, for the API version it says it speaks."""
    model = SERVICE.model
    action, version = form.get("Action"), form.get("Version")
    if not action or action not in model.operation_names:
        raise UnknownOperationException(f"Could not find operation {action} for version {version}")
    if version != model.api_version:
        raise InvalidParameterValueException(
            f"The parameter Version must be {model.api_version}; got {version}.")
    return model.operation_model(action)


def parse_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise InvalidParameterValueException("The request body is not UTF-8 form data.") from None


def parse_request(operation: OperationModel, form: Mapping[str, str]) -> dict[str, Any]:
    """The operation's input members from flattened form fields."""
    shape = operation.input_shape
    if shape is None:
        return {}
    try:
        found = _structure(shape, form, "")
    except ValidationException as error:
        # A number that is not one: the query protocol's error for any bad value.
        raise InvalidParameterValueException(error.message) from None
    return found or {}


def _name(member: Shape, name: str) -> str:
    return str(member.serialization.get("name", name))


def _structure(shape: Shape, form: Mapping[str, str], prefix: str) -> dict[str, Any] | None:
    result: dict[str, Any] = {}
    for name, member in shape.members.items():
        value = _value(member, form, prefix + _name(member, name))
        if value is not None:
            result[name] = value
    return result or None


def _value(shape: Shape, form: Mapping[str, str], key: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _structure(shape, form, key + ".")
    if kind == "list":
        flattened = shape.serialization.get("flattened")
        base = key if flattened else f"{key}.{_name(shape.member, 'member')}"
        items = []
        for index in _indexes(form, base):
            items.append(_value(shape.member, form, f"{base}.{index}"))
        if not items and form.get(key) == "":
            return []  # `Statistics=` sends an empty list
        return items or None
    if kind == "map":
        base = key if shape.serialization.get("flattened") else f"{key}.entry"
        entries = {}
        for index in _indexes(form, base):
            k = form.get(f"{base}.{index}.{_name(shape.key, 'key')}")
            if k is not None:
                entries[k] = _value(shape.value, form, f"{base}.{index}.{_name(shape.value, 'value')}")
        return entries or None
    text = form.get(key)
    if text is None:
        return None
    if kind == "timestamp":
        return text  # observe/cloudwatch.py reads ISO 8601 and epoch seconds alike
    return protocol._scalar_from_text(shape, text, key)


def _indexes(form: Mapping[str, str], base: str) -> list[int]:
    pattern = re.compile(re.escape(base) + r"\.(\d+)(\.|$)")
    found = {int(m.group(1)) for k in form if (m := pattern.match(k))}
    return sorted(found)


# -- the XML answer ---------------------------------------------------------------


def _xml(shape: Shape | None, value: Any) -> str:
    if shape is None or value is None:
        return ""
    kind = shape.type_name
    if kind == "structure":
        parts: list[str] = []
        for name, member in shape.members.items():
            if value.get(name) is None:
                continue
            tag = _name(member, name)
            if member.type_name == "list" and member.serialization.get("flattened"):
                parts.extend(f"<{tag}>{_xml(member.member, v)}</{tag}>" for v in value[name])
            else:
                parts.append(f"<{tag}>{_xml(member, value[name])}</{tag}>")
        return "".join(parts)
    if kind == "list":
        tag = _name(shape.member, "member")
        return "".join(f"<{tag}>{_xml(shape.member, v)}</{tag}>" for v in value)
    if kind == "map":
        k_tag, v_tag = _name(shape.key, "key"), _name(shape.value, "value")
        return "".join(f"<entry><{k_tag}>{escape(str(k))}</{k_tag}><{v_tag}>{_xml(shape.value, v)}"
                       f"</{v_tag}></entry>" for k, v in value.items())
    if kind == "timestamp":
        if isinstance(value, datetime.datetime):
            return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return escape(str(value))
    if kind == "boolean":
        return "true" if value else "false"
    return escape(str(value))


def serialize_response(operation: OperationModel, output: Mapping[str, Any],
                       request_id: str) -> Response:
    name = operation.name
    wrapper = operation.output_shape.serialization.get("resultWrapper") if operation.output_shape else None
    result = _xml(operation.output_shape, dict(output))
    body = (f'<{name}Response xmlns="{SERVICE.xml_namespace}">'
            + (f"<{wrapper}>{result}</{wrapper}>" if wrapper else "")
            + f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{name}Response>")
    return Response(body, headers={"x-amzn-RequestId": request_id}, media_type="text/xml")


def error_response(error: LambdaError, request_id: str) -> Response:
    fault = "Sender" if error.fault == "User" else "Receiver"
    code = error.query_code or error.error_type
    body = (f'<ErrorResponse xmlns="{SERVICE.xml_namespace}"><Error><Type>{fault}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(error.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>")
    status = 400 if error.status_code == 404 else error.status_code
    return Response(body, status_code=status, headers={"x-amzn-RequestId": request_id},
                    media_type="text/xml")
