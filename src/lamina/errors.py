"""One exception type per AWS error Lamina returns.

Every layer raises these; only `api` turns them into HTTP responses (status code,
`x-amzn-ErrorType` header and a JSON body shaped like AWS's), so boto3 raises the
same exception classes it raises against AWS.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LambdaError(Exception):
    """An error that reaches the client as an AWS error response."""

    status_code: ClassVar[int] = 400
    # "User" for the caller's fault, "Service" for ours; AWS puts it in the body.
    fault: ClassVar[str] = "User"
    # The code this error had in the older query protocol. Services that moved from
    # query to JSON (SQS) still send it in `x-amzn-query-error`, and SDKs show it as
    # the error code; None means the code is the type name.
    query_code: ClassVar[str | None] = None

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        # Extra members of the error shape, e.g. TooManyRequestsException's Reason.
        self.fields = fields

    @property
    def error_type(self) -> str:
        return type(self).__name__


class ValidationException(LambdaError):
    """A request that breaks the service model's constraints (min, max, enum, pattern)."""

    @classmethod
    def of(cls, problems: list[str]) -> ValidationException:
        """AWS's wording: "2 validation errors detected: <problem>; <problem>"."""
        noun = "error" if len(problems) == 1 else "errors"
        return cls(f"{len(problems)} validation {noun} detected: " + "; ".join(problems))


class InvalidParameterValueException(LambdaError):
    query_code = "InvalidParameterValue"


class InvalidRequestContentException(LambdaError):
    pass


class ResourceNotFoundException(LambdaError):
    status_code = 404


class ResourceConflictException(LambdaError):
    status_code = 409


class SnapStartNotReadyException(LambdaError):
    """Invoking a SnapStart version whose snapshot is still being made (Pending)."""

    status_code = 409


class SnapStartException(LambdaError):
    """A restored SnapStart environment failed before its first event: an
    after-restore hook raised, or the restored runtime exited."""

    status_code = 400


class SnapStartTimeoutException(LambdaError):
    """A restored SnapStart environment did not finish its restore phase in time."""

    status_code = 408


class ConflictException(LambdaError):
    """EventBridge Scheduler's: a schedule of that name exists."""

    status_code = 409


class LimitExceededException(LambdaError):
    """EventBridge's: more targets on a rule than it allows."""


class ResourceInUseException(LambdaError):
    pass


class PreconditionFailedException(LambdaError):
    status_code = 412


class CodeStorageExceededException(LambdaError):
    pass


class PolicyLengthExceededException(LambdaError):
    pass


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    status_code = 404


class RequestEntityTooLargeException(LambdaError):
    status_code = 413

    @classmethod
    def for_operation(cls, limit: int, operation: str) -> RequestEntityTooLargeException:
        """AWS's wording, e.g. for an Invoke payload over 6 MB."""
        return cls(f"Request must be smaller than {limit} bytes for the {operation} operation")


class UnsupportedMediaTypeException(LambdaError):
    status_code = 415


class TooManyRequestsException(LambdaError):
    status_code = 429


# -- code signing -------------------------------------------------------------------


class CodeVerificationFailedException(LambdaError):
    """A package whose signature is missing, expired, revoked or from a publisher the
    function's code signing config does not allow, under the Enforce policy."""


class InvalidCodeSignatureException(LambdaError):
    """A signed package that fails the integrity check (refused even under Warn)."""


class CodeSigningConfigNotFoundException(LambdaError):
    status_code = 404






class ServiceException(LambdaError):
    status_code = 500
    fault = "Service"


class UnrecognizedClientException(LambdaError):
    status_code = 403


class InvalidSignatureException(LambdaError):
    status_code = 403


class AccessDeniedException(LambdaError):
    status_code = 403


class UnknownOperationException(LambdaError):
    status_code = 404


class UnsupportedOperationException(LambdaError):
    """An operation of the Lambda model that this server does not implement."""

    status_code = 400


class IncompleteSignatureException(LambdaError):
    status_code = 403


class ExpiredTokenException(LambdaError):
    """Temporary credentials (an execution role's) used after they expired."""

    status_code = 403


class RequestTimeoutException(LambdaError):
    """A request whose body did not arrive in time (the connection is closed after it)."""

    status_code = 408


class MissingAuthenticationTokenException(LambdaError):
    """A request with no Authorization header at all, where keys are required."""

    status_code = 403


# -- CloudWatch Logs ---------------------------------------------------------------


class InvalidParameterException(LambdaError):
    pass


class ResourceAlreadyExistsException(LambdaError):
    pass


# -- SQS (the queue service served beside the Lambda API) ------------------------


class QueueDoesNotExist(LambdaError):
    query_code = "AWS.SimpleQueueService.NonExistentQueue"


class QueueNameExists(LambdaError):
    query_code = "QueueAlreadyExists"


class InvalidAttributeName(LambdaError):
    pass


class InvalidAttributeValue(LambdaError):
    pass


class InvalidMessageContents(LambdaError):
    pass


class MissingRequiredParameterException(LambdaError):
    query_code = "MissingParameter"


class ReceiptHandleIsInvalid(LambdaError):
    pass


class EmptyBatchRequest(LambdaError):
    query_code = "AWS.SimpleQueueService.EmptyBatchRequest"


class TooManyEntriesInBatchRequest(LambdaError):
    query_code = "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"


class BatchEntryIdsNotDistinct(LambdaError):
    query_code = "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"


class InvalidBatchEntryId(LambdaError):
    query_code = "AWS.SimpleQueueService.InvalidBatchEntryId"


class BatchRequestTooLong(LambdaError):
    query_code = "AWS.SimpleQueueService.BatchRequestTooLong"


# -- KMS (the key service served beside the Lambda API) ---------------------------


class NotFoundException(LambdaError):
    pass


class DisabledException(LambdaError):
    pass


class KMSInvalidStateException(LambdaError):
    """KMS's (400) and Lambda's (502, a key unusable at invoke) error of this name;
    the KMS service answers every client error with 400 (json_protocol)."""

    status_code = 502


class InvalidCiphertextException(LambdaError):
    pass


class IncorrectKeyException(LambdaError):
    pass


class AlreadyExistsException(LambdaError):
    pass


class InvalidAliasNameException(LambdaError):
    pass


class InvalidMarkerException(LambdaError):
    pass


# -- Lambda's answers for a function whose KMS key cannot be used -------------------


class KMSDisabledException(LambdaError):
    status_code = 502


class KMSNotFoundException(LambdaError):
    status_code = 502


# -- EFS (file systems and access points) and mounting them ------------------------


class BadRequest(LambdaError):
    pass


class FileSystemNotFound(LambdaError):
    status_code = 404


class AccessPointNotFound(LambdaError):
    status_code = 404


class FileSystemAlreadyExists(LambdaError):
    status_code = 409


class AccessPointAlreadyExists(LambdaError):
    status_code = 409


class FileSystemInUse(LambdaError):
    status_code = 409


class AccessPointLimitExceeded(LambdaError):
    status_code = 403


class FileSystemLimitExceeded(LambdaError):
    status_code = 403


class EFSMountFailureException(LambdaError):
    status_code = 403


class InvalidParameterCombinationException(LambdaError):
    """CloudWatch's: parameters that cannot go together (or a range too large)."""

    query_code = "InvalidParameterCombination"


class InvalidNextToken(LambdaError):
    """CloudWatch's: a NextToken this server did not hand out."""
