"""Functions' resource-based policies (AddPermission, RemovePermission, GetPolicy),
and the one place deciding whether a caller may invoke a function.

A policy belongs to one resource: the function (unqualified), a version or an
alias, each with its own document, as on AWS. Statements are written the way AWS
writes them (principal forms, `Condition` blocks keyed `StringEquals`, `ArnLike`,
`Bool`), so GetPolicy's document reads like AWS's.

Authorization follows AWS's rule for a resource policy with no identity policies
behind it: callers from this server's own account may do anything (Lamina's keys act
as the account itself); anyone else, including the unauthenticated public of a
function URL with AuthType NONE, only what an Allow statement of the invoked
resource grants, with every condition satisfied by the request.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from lamina.control.arns import Region
from lamina.control.functions import FunctionRegistry, is_version_number
from lamina.control.models import LATEST
from lamina.control.policies import ResourcePolicies
from lamina.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    ResourceNotFoundException,
)
from lamina.limits import Limits
from lamina.store.changes import unannounced

GETTER_API = "GetPolicy"
INVOKE_FUNCTION = "lambda:InvokeFunction"
INVOKE_FUNCTION_URL = "lambda:InvokeFunctionUrl"
RESOURCE_MISSING = "The resource you requested does not exist."
INVALID_PRINCIPAL = "The provided principal was invalid. Please check the principal and try again."

_ACCOUNT = re.compile(r"\d{12}")
_IAM_ARN = re.compile(r"arn:aws[a-zA-Z-]*:iam::(?P<account>\d{12}):\S+")
# Service principals: "s3.amazonaws.com", "alexa-appkit.amazon.com", "events.amazonaws.com.cn".
_SERVICE = re.compile(r"[a-z0-9][a-z0-9.-]*\.(amazonaws\.com(\.cn)?|amazon\.com)")


def statement_principal(principal: str) -> str | dict[str, str]:
    """A Principal parameter as AWS writes it in the statement."""
    if principal == "*":
        return "*"
    if _ACCOUNT.fullmatch(principal):
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    if _IAM_ARN.fullmatch(principal):
        return {"AWS": principal}
    if _SERVICE.fullmatch(principal):
        return {"Service": principal}
    raise InvalidParameterValueException(INVALID_PRINCIPAL)


@dataclass(frozen=True)
class Permission:
    """AddPermission's input."""

    statement_id: str
    action: str
    principal: str
    source_arn: str | None = None
    source_account: str | None = None
    event_source_token: str | None = None
    principal_org_id: str | None = None
    function_url_auth_type: str | None = None
    invoked_via_function_url: bool | None = None

    def statement(self, resource_arn: str) -> dict[str, Any]:
        if self.function_url_auth_type is not None and self.action != INVOKE_FUNCTION_URL:
            raise InvalidParameterValueException(
                "FunctionUrlAuthType is only supported for lambda:InvokeFunctionUrl action"
            )
        if self.invoked_via_function_url and self.action != INVOKE_FUNCTION:
            raise InvalidParameterValueException(
                "InvokedViaFunctionUrl is only supported for lambda:InvokeFunction action"
            )
        statement: dict[str, Any] = {
            "Sid": self.statement_id,
            "Effect": "Allow",
            "Principal": statement_principal(self.principal),
            "Action": self.action,
            "Resource": resource_arn,
        }
        # AWS's order: StringEquals (source account, URL auth type, token, org), then
        # ArnLike (source ARN), then Bool.
        equals: dict[str, str] = {}
        if self.source_account:
            equals["AWS:SourceAccount"] = self.source_account
        if self.function_url_auth_type:
            equals["lambda:FunctionUrlAuthType"] = self.function_url_auth_type
        if self.event_source_token:
            equals["lambda:EventSourceToken"] = self.event_source_token
        if self.principal_org_id:
            equals["aws:PrincipalOrgID"] = self.principal_org_id
        condition: dict[str, dict[str, str]] = {}
        if equals:
            condition["StringEquals"] = equals
        if self.source_arn:
            condition["ArnLike"] = {"AWS:SourceArn": self.source_arn}
        if self.invoked_via_function_url:
            condition["Bool"] = {"lambda:InvokedViaFunctionUrl": "true"}
        if condition:
            statement["Condition"] = condition
        return statement


@dataclass(frozen=True)
class AccessRequest:
    """One action a caller asks for, with the request's facts conditions may test."""

    action: str
    # The caller's account; None for an unauthenticated caller (a public URL).
    account_id: str | None
    # The IAM ARN the caller signed as, when known (an execution role).
    principal_arn: str | None = None
    # Set when the request came through a function URL: its AuthType.
    url_auth_type: str | None = None
    # An AWS service acting for a resource (events.amazonaws.com for an EventBridge
    # rule): the service principal, and the resource's ARN and account.
    service: str | None = None
    source_arn: str | None = None
    source_account: str | None = None

    def context(self) -> dict[str, str]:
        """Condition keys (lower-cased, as IAM compares them) this request carries."""
        keys: dict[str, str] = {}
        if self.url_auth_type is not None:
            keys["lambda:functionurlauthtype"] = self.url_auth_type
            keys["lambda:invokedviafunctionurl"] = "true"
        if self.account_id is not None:
            keys["aws:principalaccount"] = self.account_id
        if self.source_arn is not None:
            keys["aws:sourcearn"] = self.source_arn
        if self.source_account is not None:
            keys["aws:sourceaccount"] = self.source_account
        return keys


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), str(pattern).lower())
               for pattern in _as_list(statement.get("Action", [])))


def _principal_matches(principal: Any, request: AccessRequest) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for kind, values in principal.items():
        for value in _as_list(values):
            if kind == "Service":
                # Services act inside this server (EventBridge rules), never as a client.
                if request.service is not None and value == request.service:
                    return True
                continue
            if kind != "AWS":
                continue
            if value == "*":
                return True
            if request.account_id is None:
                continue
            if value in (request.account_id, f"arn:aws:iam::{request.account_id}:root"):
                return True
            if request.principal_arn is not None and value == request.principal_arn:
                return True
    return False


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            actual = context.get(key.lower())
            # A key the request does not carry fails the test, as in IAM.
            if actual is None:
                return False
            wanted = [str(v) for v in _as_list(expected)]
            if operator in ("StringEquals", "ArnEquals"):
                held = actual in wanted
            elif operator in ("StringLike", "ArnLike"):
                held = any(fnmatch.fnmatchcase(actual, w) for w in wanted)
            elif operator == "Bool":
                held = actual.lower() in (w.lower() for w in wanted)
            else:
                held = False
            if not held:
                return False
    return True


def allows(document: dict[str, Any] | None, request: AccessRequest) -> bool:
    """Whether a resource policy grants the request (an explicit Deny wins)."""
    if document is None:
        return False
    context = request.context()
    allowed = False
    for statement in _as_list(document.get("Statement", [])):
        if not (_action_matches(statement, request.action)
                and _principal_matches(statement.get("Principal"), request)
                and _condition_holds(statement.get("Condition", {}), context)):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class FunctionPolicies:
    def __init__(self, policies: ResourcePolicies, functions: FunctionRegistry, region: Region,
                 limits: Limits) -> None:
        self.policies = policies
        self.functions = functions
        self.region = region
        self.limits = limits
        # Policies read on every function URL request and cross-account Invoke, by
        # ARN (None: the resource has none). A store round trip costs about half a
        # millisecond; every change in this process goes through here and drops the
        # entry. (Several nodes sharing one database will need change notices.)
        self._documents: dict[str, dict[str, Any] | None] = {}
        # Tells other front ends which resource's policy changed (store/changes.py).
        self.announce: Callable[[str], None] = unannounced

    # -- which resource a request names ----------------------------------------

    def _resource(self, function_name: str, qualifier: str | None) -> tuple[str, str | None]:
        """(function name, qualifier) of an existing function, version or alias; the
        qualifier None for the unqualified function ($LATEST's policy is the function's)."""
        ref = self.functions.resolve(function_name, qualifier)
        name, qualifier = ref.name, ref.qualifier
        if self.functions.load_version(name, LATEST) is None:
            raise self.functions.not_found(name)
        if qualifier is None or qualifier == LATEST:
            return name, None
        if is_version_number(qualifier):
            if self.functions.load_version(name, qualifier) is None:
                raise self.functions.not_found(name, qualifier)
        elif self.functions.aliases.get(name, qualifier) is None:
            raise ResourceNotFoundException(
                f"Cannot find alias arn: {self.region.function_arn(name, qualifier)}"
            )
        return name, qualifier

    # -- the API ----------------------------------------------------------------

    def add_permission(self, function_name: str, qualifier: str | None, permission: Permission,
                       revision_id: str | None) -> tuple[str, str]:
        """Add a statement; return (the statement as JSON, the policy's RevisionId)."""
        ref = self.functions.resolve(function_name, qualifier)
        if ref.qualifier == LATEST:
            raise InvalidParameterValueException(
                "We currently do not support adding policies for $LATEST."
            )
        name, qualifier = self._resource(function_name, qualifier)
        arn = self.region.function_arn(name, qualifier)
        statement = permission.statement(arn)
        try:
            revision = self.policies.add_statement(
                arn, statement, revision_id, GETTER_API, self.limits.max_function_policy_bytes
            )
        finally:
            self._documents.pop(arn, None)
        self.announce(arn)
        return json.dumps(statement, separators=(",", ":")), revision

    def remove_permission(self, function_name: str, qualifier: str | None, statement_id: str,
                          revision_id: str | None) -> None:
        ref = self.functions.resolve(function_name, qualifier)
        if self.functions.load_version(ref.name, LATEST) is None:
            raise ResourceNotFoundException(
                f"No policy found for: {self.region.function_arn(ref.name, ref.qualifier)}"
            )
        name, qualifier = self._resource(function_name, qualifier)
        arn = self.region.function_arn(name, qualifier)
        try:
            self.policies.remove_statement(arn, statement_id, revision_id, GETTER_API)
        finally:
            self._documents.pop(arn, None)
        self.announce(arn)

    def get_policy(self, function_name: str, qualifier: str | None) -> tuple[str, str]:
        """(the policy document as JSON, its RevisionId)."""
        try:
            name, qualifier = self._resource(function_name, qualifier)
            document, revision = self.policies.get(self.region.function_arn(name, qualifier))
        except ResourceNotFoundException as error:
            # GetPolicy answers every kind of absence alike.
            if error.message.startswith("Functions from"):
                raise
            raise ResourceNotFoundException(RESOURCE_MISSING) from None
        return json.dumps(document, separators=(",", ":")), revision

    def document(self, function_name: str, qualifier: str | None) -> dict[str, Any] | None:
        """The policy of the resource an invocation names (None if it has none)."""
        arn = self.region.function_arn(function_name, None if qualifier == LATEST else qualifier)
        if arn not in self._documents:
            found = self.policies.store.get(arn)
            self._documents[arn] = found[0] if found else None
        return self._documents[arn]

    # -- authorization ----------------------------------------------------------

    def authorize(self, function_name: str, qualifier: str | None,
                  requests: list[AccessRequest]) -> bool:
        """Whether every request is allowed on the function (or its qualifier)."""
        if all(r.account_id == self.region.account_id for r in requests):
            return True
        document = self.document(function_name, qualifier)
        return all(allows(document, r) for r in requests)

    def check_invoke(self, function_name: str, qualifier: str | None, account_id: str | None,
                     principal_arn: str | None = None) -> None:
        """Invoke's check for callers of other accounts: AccessDeniedException unless
        the invoked resource's policy allows lambda:InvokeFunction."""
        account = account_id or self.region.account_id
        if account == self.region.account_id:
            return
        ref = self.functions.resolve(function_name, qualifier)
        request = AccessRequest(INVOKE_FUNCTION, account, principal_arn)
        if not self.authorize(ref.name, ref.qualifier, [request]):
            who = principal_arn or f"arn:aws:iam::{account}:root"
            raise AccessDeniedException(
                f"User: {who} is not authorized to perform: lambda:InvokeFunction on resource: "
                f"{self.region.function_arn(ref.name, ref.qualifier)} because no resource-based "
                "policy allows the lambda:InvokeFunction action"
            )

    # -- keeping policies with their resources ------------------------------------

    def alias_deleted(self, name: str, alias: str) -> None:
        arn = self.region.function_arn(name, alias)
        self._documents.pop(arn, None)
        self.policies.store.delete_all([arn])
        self.announce(arn)

    def changed_elsewhere(self, arn: str) -> None:
        if arn == "*":
            self._documents.clear()
        else:
            self._documents.pop(arn, None)

    def function_changed(self, name: str, version: str | None) -> None:
        """A deleted function takes its policies along; a deleted version its own."""
        arn = self.region.function_arn(name)
        for key in [k for k in self._documents if k == arn or k.startswith(arn + ":")]:
            del self._documents[key]
        if version is None:
            self.policies.store.delete_all([arn], prefix=arn + ":")
        elif version != LATEST and self.functions.load_version(name, version) is None:
            self.policies.store.delete_all([self.region.function_arn(name, version)])

