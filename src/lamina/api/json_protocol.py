"""AWS's JSON protocol: `POST /` with `X-Amz-Target: <TargetPrefix>.<Operation>`.

SQS speaks it (`AmazonSQS.SendMessage`), and so does CloudWatch Logs
(`Logs_20140328.PutLogEvents`). A service plugs in with one entry in SERVICES
and handlers registered under its botocore name (`@operation("SendMessage",
service="sqs")`); parsing, validation and output shapes come from the same
botocore model boto3 uses, through the helpers in `api.protocol`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from botocore.model import OperationModel, ServiceModel, Shape
from starlette.responses import Response

from lamina.api import protocol
from lamina.errors import (
    InvalidParameterValueException,
    LambdaError,
    MissingRequiredParameterException,
    UnknownOperationException,
    ValidationException,
)


@dataclass(frozen=True)
class JsonService:
    # botocore's service name; also the handlers' registry key.
    name: str
    # What precedes the error name in an error's "__type".
    error_namespace: str
    # SQS accepts values outside its model's enums (see protocol.validate).
    check_enums: bool = True
    # EventBridge answers every client error (ResourceNotFoundException included)
    # with 400, where Lambda uses 404, 409, ...
    client_status: int | None = None
    # CloudWatch answers bad input with its query protocol's errors over both
    # protocols: a missing member is MissingParameter ("The parameter X is
    # required."), a member out of the model's range InvalidParameterValue.
    query_errors: bool = False

    @property
    def model(self) -> ServiceModel:
        return protocol.service_model(self.name)

    @property
    def signing_name(self) -> str:
        """The service a request's SigV4 credential scope must name."""
        metadata = self.model.metadata
        return str(metadata.get("signingName") or metadata["endpointPrefix"])

    @property
    def content_type(self) -> str:
        return f"application/x-amz-json-{self.model.metadata.get('jsonVersion', '1.0')}"


SERVICES: dict[str, JsonService] = {
    "AmazonSQS": JsonService("sqs", "com.amazonaws.sqs#", check_enums=False),
    "Logs_20140328": JsonService("logs", ""),
    "AWSEvents": JsonService("events", "", client_status=400),
    # KMS answers every client error with 400 (Lambda answers some of the same
    # names, e.g. KMSInvalidStateException, with 502).
    "TrentService": JsonService("kms", "", client_status=400),
    # CloudWatch metrics: the same operations are also served over the query
    # protocol (api/query_protocol.py).
    "GraniteServiceVersion20100801": JsonService("cloudwatch", "", client_status=400,
                                                 query_errors=True),
}


def service_for(target: str) -> JsonService | None:
    return SERVICES.get(target.rpartition(".")[0])


def resolve(target: str) -> tuple[JsonService, OperationModel]:
    """The service and operation an X-Amz-Target header names."""
    service = service_for(target)
    name = target.rpartition(".")[2]
    if service is None or name not in service.model.operation_names:
        raise UnknownOperationException(f"No operation matches X-Amz-Target {target}")
    return service, service.model.operation_model(name)


def parse_request(operation: OperationModel, body: bytes) -> dict[str, Any]:
    shape = operation.input_shape
    if shape is None or not body.strip():
        return {}
    return protocol.body_members(shape, body)


def validate_as_query(operation: OperationModel, params: dict[str, Any]) -> None:
    """The model's checks, answered with the query protocol's errors."""
    check_required(operation, params)
    try:
        protocol.validate(operation, params)
    except ValidationException as error:
        raise InvalidParameterValueException(error.message) from None


def check_required(operation: OperationModel, params: Mapping[str, Any]) -> None:
    """MissingRequiredParameterException naming the first required member absent,
    nested ones by their query-protocol path (MetricDataQueries.member.1.Id)."""
    if operation.input_shape is not None:
        _check_required(operation.input_shape, params, "")


def _check_required(shape: Shape, value: Any, path: str) -> None:
    if shape.type_name == "structure" and isinstance(value, Mapping):
        for name in shape.required_members:
            if value.get(name) is None:
                raise MissingRequiredParameterException(f"The parameter {path}{name} is required.")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _check_required(member, value[name], f"{path}{name}.")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value, 1):
            _check_required(shape.member, item, f"{path.rstrip('.')}.member.{i}.")


def serialize_response(operation: OperationModel, output: Mapping[str, Any]) -> bytes:
    shape = operation.output_shape
    return json.dumps(protocol.to_json(shape, output) if shape is not None else {}).encode()


def error_response(error: LambdaError, request_id: str, service: JsonService | None) -> Response:
    """{"__type", "message"}; services that moved from the query protocol (SQS) also
    send the old error code in `x-amzn-query-error`, which SDKs report as the code."""
    namespace = service.error_namespace if service is not None else ""
    body: dict[str, Any] = {"__type": namespace + error.error_type, "message": error.message}
    body.update(error.fields)
    headers = {"x-amzn-RequestId": request_id}
    if service is not None and service.model.is_query_compatible:
        fault = "Sender" if error.fault == "User" else "Receiver"
        headers["x-amzn-query-error"] = f"{error.query_code or error.error_type};{fault}"
    # The JSON protocol answers a caller's error with 400 whatever its type (e.g. Logs'
    # ResourceNotFoundException), where rest-json Lambda answers 404.
    status = 400 if error.status_code == 404 else error.status_code
    if service is not None and service.client_status is not None and error.fault == "User":
        status = service.client_status
    return Response(
        json.dumps(body),
        status_code=status,
        headers=headers,
        media_type=service.content_type if service is not None else "application/json",
    )
