"""The console's one way to read and change anything: the API's own operations.

A change made in the console is the API operation a boto3 user would call, run
in-process: the same input validation against botocore's model (so memory 100
answers AWS's "1 validation error detected: ..."), the same handler in
`api/operations`, the same control-plane call behind it and the same errors.
There is no second path into `control/`; only what no operation serves (saved
test events, the package's file listing, the metrics for charts) is read apart.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from starlette.requests import Request

from lamina.api import json_protocol, protocol
from lamina.api.auth import Principal
from lamina.api.bodies import body_cap, too_large
from lamina.api.operations import HANDLERS, Call, load_all
from lamina.errors import LambdaError, UnsupportedOperationException
from lamina.platform import Platform


class ApiError(Exception):
    """An operation's AWS error, as a boto3 user would see it: type and message."""

    def __init__(self, error: LambdaError) -> None:
        super().__init__(error.message)
        self.error_type = error.error_type
        self.message = error.message
        self.status_code = error.status_code


class ApiClient:
    """Calls operations by name with model-shaped input, as one principal."""

    def __init__(self, platform: Platform, request: Request, principal: Principal) -> None:
        self.platform = platform
        self.request = request
        self.principal = principal
        load_all()

    async def call(self, operation: str, service: str = "lambda", **params: Any) -> dict[str, Any]:
        """The operation's output members; raises ApiError with the AWS error."""
        model = protocol.service_model(service).operation_model(operation)
        handler = HANDLERS.get((service, operation))
        try:
            if handler is None:
                raise UnsupportedOperationException(f"The {operation} operation is not supported")
            checked = {name: value for name, value in params.items() if value is not None}
            self._check_size(service, operation, checked)
            # As the dispatcher does: SQS checks no enums (its JSON protocol took over
            # the query protocol's leniency).
            enums = next((s.check_enums for s in json_protocol.SERVICES.values()
                          if s.name == service), True)
            protocol.validate(model, checked, enums=enums)
            return await handler(Call(self.platform, checked, self.request,
                                      str(uuid.uuid4()), self.principal))
        except LambdaError as error:
            raise ApiError(error) from None

    def _check_size(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """The API's body limits, on the body an SDK would have sent: Invoke's payload
        as is, every other operation's JSON with its blobs in base64."""
        cap = body_cap(self.platform.settings.limits, service, operation, params.get("InvocationType"))
        if operation in ("Invoke", "InvokeWithResponseStream"):
            size = len(params.get("Payload") or b"")
        else:
            def encoded(value: Any) -> Any:
                if isinstance(value, bytes):
                    return base64.b64encode(value).decode()
                raise TypeError(type(value).__name__)

            size = len(json.dumps(params, default=encoded))
        if size > cap:
            raise too_large(cap, service, operation, params.get("InvocationType"))
