"""Change sets and their execution: what a template wants against what the stack has.

`plan` builds the code, resolves every resource in dependency order and compares it
with the stack's record: Add, Modify, Replace (a new physical name) or Remove.
`apply` makes the changes through the API in dependency order, then removes what
went away (CloudFormation's clean-up phase, last, so a failure before it leaves
everything that was there). When a call fails, what this deploy did is undone in
reverse order (created resources deleted, functions given back their code and
configuration, aliases pointed back) and the record is left as it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from lamina.stacks import records
from lamina.stacks.build import Artifact, BuildTarget, Progress, build
from lamina.stacks.handlers import HANDLERS
from lamina.stacks.intrinsics import Pending, ResolveError, Resolver, parameter_values
from lamina.stacks.records import ResourceState, StackRecord
from lamina.stacks.template import Template
from lamina.stacks.transform import (
    DEFAULT_ROLE,
    Expanded,
    Resource,
    Route,
    digest,
    expand,
)


class DeployError(Exception):
    pass


@dataclass
class Change:
    action: str           # Add | Modify | Replace | Remove
    logical_id: str
    type: str
    replacement: bool = False


@dataclass
class Plan:
    stack_name: str
    template: Template
    expanded: Expanded
    order: list[str]
    artifacts: dict[str, Artifact]
    changes: list[Change]
    previous: StackRecord | None
    resolver_inputs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
    desired: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes


class Clients:
    """The API clients a stack speaks to: one endpoint, four services, made when first used."""

    def __init__(self, factory: Callable[[str], Any], endpoint: str, region: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self._factory = factory
        self._made: dict[str, Any] = {}
        self._account: str | None = None

    def _client(self, service: str) -> Any:
        if service not in self._made:
            self._made[service] = self._factory(service)
        return self._made[service]

    @property
    def lambda_(self) -> Any:
        return self._client("lambda")

    @property
    def sqs(self) -> Any:
        return self._client("sqs")

    @property
    def events(self) -> Any:
        return self._client("events")

    @property
    def scheduler(self) -> Any:
        return self._client("scheduler")

    @property
    def account(self) -> str:
        """The server's account id. No API names it, so it is read from the ARN in a
        ResourceNotFoundException (AWS's message: "Function not found: arn:...")."""
        if self._account is None:
            self._account = "000000000000"
            try:
                self.lambda_.get_function_configuration(FunctionName="lamina-account-probe")
            except ClientError as error:
                message = error.response.get("Error", {}).get("Message", "")
                if "arn:aws:lambda:" in message:
                    self._account = message.split("arn:aws:lambda:", 1)[1].split(":")[1]
        return self._account


def _topological(resources: dict[str, Resource]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(logical_id: str, path: list[str]) -> None:
        if state.get(logical_id) == 2:
            return
        if state.get(logical_id) == 1:
            raise DeployError(f"circular dependency: {' -> '.join(path + [logical_id])}")
        state[logical_id] = 1
        for dependency in sorted(resources[logical_id].depends_on):
            visit(dependency, path + [logical_id])
        state[logical_id] = 2
        order.append(logical_id)

    for logical_id in resources:
        visit(logical_id, [])
    return order


def _physical_name(stack: str, logical_id: str, limit: int) -> str:
    name = f"{stack}-{logical_id}"
    return name if len(name) <= limit else f"{name[:limit - 9]}-{digest(name)[:8]}"


class Stack:
    def __init__(self, name: str, clients: Clients, progress: Progress) -> None:
        self.name = name
        self.clients = clients
        self.progress = progress

    # -- planning --------------------------------------------------------------------

    def plan(self, template: Template, overrides: dict[str, str], build_progress: Progress) -> Plan:
        try:
            parameters = parameter_values(template.section("Parameters"), overrides)
        except ResolveError as error:
            raise DeployError(str(error)) from None
        parameters.update(self._pseudo_parameters())
        expanded = expand(template)
        inputs = (parameters, template.section("Mappings"), template.section("Conditions"))
        known: dict[str, ResourceState | None] = {}
        previous = records.load(self.clients.endpoint, self.name)
        resolver = self._resolver(inputs, expanded, known)
        resources = {k: r for k, r in expanded.resources.items()
                     if r.condition is None or resolver.condition(r.condition)}
        for resource in resources.values():
            resource.depends_on &= set(resources)
        order = _topological(resources)
        artifacts = self._build(template, resources, resolver, build_progress)
        plan = Plan(self.name, template, expanded, order, artifacts, [], previous, inputs)
        old = previous.resources if previous else {}
        for logical_id in order:
            resource = resources[logical_id]
            desired = self.desired(plan, resource, resolver)
            plan.desired[logical_id] = desired
            before = old.get(logical_id)
            physical = self.physical_id(resource, desired["properties"])
            if before is None or before.type != resource.type:
                plan.changes.append(Change("Add", logical_id, resource.type))
                known[logical_id] = self._predicted(resource, desired, physical)
            elif _same(before, desired) and (physical is None or physical == before.physical_id):
                known[logical_id] = before
            else:
                replace = physical is not None and physical != before.physical_id
                plan.changes.append(Change("Replace" if replace else "Modify", logical_id, resource.type,
                                           replacement=replace))
                predicted = self._predicted(resource, desired, physical or before.physical_id)
                known[logical_id] = predicted if replace or resource.type == "AWS::Lambda::LayerVersion" \
                    else ResourceState(before.type, before.physical_id, {}, before.attributes)
        for logical_id, before in old.items():
            if logical_id not in resources or before.type != resources[logical_id].type:
                plan.changes.append(Change("Remove", logical_id, before.type))
        return plan

    def _pseudo_parameters(self) -> dict[str, Any]:
        region, account = self.clients.region, self.clients.account
        return {"AWS::Region": region, "AWS::AccountId": account, "AWS::StackName": self.name,
                "AWS::StackId": f"arn:aws:cloudformation:{region}:{account}:stack/{self.name}/lamina",
                "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NotificationARNs": []}

    def _resolver(self, inputs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]], expanded: Expanded,
                  known: dict[str, ResourceState | None]) -> Resolver:
        parameters, mappings, conditions = inputs
        account = self.clients.account

        def lookup(logical_id: str, attribute: str | None) -> Any:
            target = expanded.aliases.get(logical_id, logical_id)
            if logical_id in expanded.roles:
                name = expanded.roles[logical_id]
                return f"arn:aws:iam::{account}:role/{name}" if attribute == "Arn" else name
            # The role SAM would make for function X, "XRole".
            if logical_id.endswith("Role") and logical_id[:-4] in expanded.resources and target not in known:
                role = DEFAULT_ROLE.replace("000000000000", account)
                return role if attribute else role.rsplit("/", 1)[1]
            if logical_id in ("ServerlessRestApi", "ServerlessHttpApi"):
                return self.name
            if target not in known:
                raise ResolveError(f"{logical_id} is not part of this deploy (its Condition is false)")
            state = known[target]
            if state is None:
                raise ResolveError(f"{logical_id} is referenced before it is made")
            if attribute is None:
                return state.physical_id
            return state.attributes.get(attribute, Pending(f"{logical_id}.{attribute}"))

        return Resolver(parameters, mappings, conditions, lookup)

    def _build(self, template: Template, resources: dict[str, Resource], resolver: Resolver,
               progress: Progress) -> dict[str, Artifact]:
        artifacts = {}
        for logical_id, resource in resources.items():
            if resource.build is None:
                continue
            spec = resolver.resolve(resource.build)
            architectures = spec.get("Architectures") or ["x86_64"]
            method = spec.get("BuildMethod")
            runtime = spec.get("Runtime")
            if spec.get("Layer") and not method:
                runtime = None   # SAM zips a layer as it is unless it names a BuildMethod
            target = BuildTarget(logical_id, (template.directory / str(spec["CodeUri"])).resolve(),
                                 runtime, architectures[0], method, bool(spec.get("Layer")))
            progress(f"building {logical_id} ({method or runtime or 'as is'}) from {target.source}")
            artifact = build(target, progress)
            progress(f"built {logical_id}: {artifact.size:,} bytes"
                     + (" (cached)" if artifact.cached else ""))
            artifacts[logical_id] = artifact
        return artifacts

    def desired(self, plan: Plan, resource: Resource, resolver: Resolver) -> dict[str, Any]:
        try:
            properties = resolver.resolve(resource.properties)
        except ResolveError as error:
            raise DeployError(f"{resource.logical_id}: {error}") from None
        if "FunctionRevision" in properties:
            source = resource.properties["FunctionRevision"]["Lamina::Revision"]
            properties["FunctionRevision"] = digest(plan.desired.get(source))
        artifact = plan.artifacts.get(resource.logical_id)
        # Pending values print as "(known after deploy ...)" and never equal a record.
        properties = json.loads(json.dumps(properties, default=str))
        return {"properties": properties, "code_sha256": artifact.code_sha256 if artifact else None}

    def physical_id(self, resource: Resource, properties: dict[str, Any]) -> str | None:
        """Names fixed before a resource exists (None: the API picks the id)."""
        kind = resource.type
        if kind == "AWS::Lambda::Function":
            return properties.get("FunctionName") or _physical_name(self.name, resource.logical_id, 64)
        if kind == "AWS::SQS::Queue":
            name = properties.get("QueueName") or _physical_name(self.name, resource.logical_id, 80)
            return f"{self.clients.endpoint}/{self.clients.account}/{name}"
        if kind == "AWS::Events::Rule":
            return properties.get("Name") or _physical_name(self.name, resource.logical_id, 64)
        if kind == "AWS::Scheduler::Schedule":
            return properties.get("Name") or _physical_name(self.name, resource.logical_id, 64)
        return None

    def _predicted(self, resource: Resource, desired: dict[str, Any], physical: str | None) -> ResourceState:
        account, region = self.clients.account, self.clients.region
        properties = desired["properties"]
        attributes: dict[str, Any] = {}
        kind = resource.type
        if kind == "AWS::Lambda::Function":
            attributes["Arn"] = f"arn:aws:lambda:{region}:{account}:function:{physical}"
        elif kind == "AWS::SQS::Queue":
            name = str(physical).rsplit("/", 1)[1]
            attributes = {"Arn": f"arn:aws:sqs:{region}:{account}:{name}", "QueueName": name,
                          "QueueUrl": physical}
        elif kind == "AWS::Events::Rule":
            attributes["Arn"] = f"arn:aws:events:{region}:{account}:rule/{physical}"
        elif kind == "AWS::Scheduler::Schedule":
            group = properties.get("GroupName", "default")
            attributes["Arn"] = f"arn:aws:scheduler:{region}:{account}:schedule/{group}/{physical}"
        elif kind == "AWS::Lambda::Alias":
            physical = f"{properties['FunctionName']}:{properties['Name']}" \
                if str(properties["FunctionName"]).startswith("arn:") else None
        return ResourceState(kind, physical or str(Pending(resource.logical_id)), properties, attributes)

    # -- applying --------------------------------------------------------------------

    def apply(self, plan: Plan) -> StackRecord:
        previous = plan.previous
        old = dict(previous.resources) if previous else {}
        known: dict[str, ResourceState | None] = {k: v for k, v in old.items()}
        resolver = self._resolver(plan.resolver_inputs, plan.expanded, known)
        actions = {c.logical_id: c for c in plan.changes}
        undo: list[tuple[str, Callable[[], None]]] = []
        made: dict[str, ResourceState] = {}
        try:
            for logical_id in plan.order:
                resource = plan.expanded.resources[logical_id]
                change = actions.get(logical_id)
                if change is None:
                    made[logical_id] = old[logical_id]
                    continue
                desired = self.desired(plan, resource, resolver)
                plan.desired[logical_id] = desired
                artifact = plan.artifacts.get(logical_id)
                before = old.get(logical_id) if change.action == "Modify" else None
                state, revert = HANDLERS[resource.type].put(self, resource, desired, artifact, before)
                state.code_sha256 = desired["code_sha256"]
                verb = "CREATE" if before is None else "UPDATE"
                self.progress(f"{verb}_COMPLETE  {resource.type:<34} {logical_id}")
                made[logical_id] = known[logical_id] = state
                undo.append((logical_id, revert))
        except (Exception, KeyboardInterrupt) as error:   # Ctrl-C mid-deploy rolls back too
            self.progress(f"UPDATE_FAILED  {_message(error) or type(error).__name__}")
            for logical_id, revert in reversed(undo):
                try:
                    revert()
                    self.progress(f"ROLLBACK_COMPLETE  {logical_id}")
                except Exception as failure:   # keep undoing the rest
                    self.progress(f"ROLLBACK_FAILED  {logical_id}: {failure}")
            raise DeployError(f"deploy failed and was rolled back: {_message(error)}") from None
        # Clean-up: what the template no longer has, and the old side of replacements.
        old_order = previous.order if previous else []
        for logical_id in reversed(old_order):
            change = actions.get(logical_id)
            # A layer's versions are immutable: a changed layer is a new version, and
            # the old one goes unless RetentionPolicy keeps it (SAM's default).
            replaced = change is not None and change.action == "Modify" and change.type == "AWS::Lambda::LayerVersion"
            if change is not None and (change.action in ("Remove", "Replace") or replaced):
                self._delete_one(logical_id, old[logical_id])
        record = StackRecord(self.name, self.clients.endpoint, made, list(plan.order),
                             routes=[vars(r) for r in plan.expanded.routes],
                             template=str(plan.template.path.resolve()),
                             updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        record.outputs = self.outputs(plan, resolver)
        records.save(record)
        return record

    def outputs(self, plan: Plan, resolver: Resolver) -> dict[str, Any]:
        found = {}
        for name, output in plan.template.section("Outputs").items():
            if isinstance(output, dict) and output.get("Condition") and not resolver.condition(output["Condition"]):
                continue
            try:
                value = resolver.resolve(output.get("Value"))
            except ResolveError as error:
                value = f"(unresolved: {error})"
            found[str(name)] = {"Value": str(value), "Description": str(output.get("Description", ""))}
        return found

    def _delete_one(self, logical_id: str, state: ResourceState) -> None:
        try:
            HANDLERS[state.type].delete(self, state)
            self.progress(f"DELETE_COMPLETE  {state.type:<34} {logical_id}")
        except ClientError as error:
            if error.response["Error"]["Code"] in ("ResourceNotFoundException", "QueueDoesNotExist",
                                                   "AWS.SimpleQueueService.NonExistentQueue"):
                self.progress(f"DELETE_COMPLETE  {state.type:<34} {logical_id} (already gone)")
            else:
                self.progress(f"DELETE_FAILED  {state.type:<34} {logical_id}: {_message(error)}")

    def delete(self, record: StackRecord) -> None:
        for logical_id in reversed(record.order):
            state = record.resources.get(logical_id)
            if state is not None:
                self._delete_one(logical_id, state)
        records.remove(record.endpoint, record.name)

    # -- waiting -----------------------------------------------------------------

    def wait_function(self, name: str) -> dict[str, Any]:
        """Until a function is no longer Pending or InProgress, as boto3's waiters wait."""
        deadline = time.monotonic() + 900
        while True:
            config = self.clients.lambda_.get_function_configuration(FunctionName=name)
            if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
                raise DeployError(f"function {name} failed: {config.get('StateReason') or config.get('LastUpdateStatusReason')}")
            if config.get("State") != "Pending" and config.get("LastUpdateStatus") != "InProgress":
                return dict(config)
            if time.monotonic() > deadline:
                raise DeployError(f"function {name} is still not ready")
            time.sleep(0.05)


def _same(before: ResourceState, desired: dict[str, Any]) -> bool:
    return (json.dumps(before.properties, sort_keys=True) == json.dumps(desired["properties"], sort_keys=True)
            and before.code_sha256 == desired["code_sha256"])


def _message(error: BaseException) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{err.get('Code')}: {err.get('Message')}"
    return str(error)


def route_urls(record: StackRecord) -> list[tuple[Route, str]]:
    """Each Api/HttpApi route with the URL that serves it."""
    found = []
    for route in record.routes:
        url_state = record.resources.get(f"{route['function']}Url")
        base = (url_state.attributes.get("FunctionUrl", "") if url_state else "").rstrip("/")
        found.append((Route(**route), base + route["path"]))
    return found


def default_stack_name(template_path: Path) -> str:
    return template_path.resolve().parent.name.replace("_", "-") or "lamina-stack"
