"""CloudFormation's intrinsic functions, evaluated against one deployment's values.

Parameters, pseudo parameters and conditions are known before anything is made;
what a resource's `Ref` or `Fn::GetAtt` gives comes from a callback, so the same
code resolves a change set (attributes of resources not made yet are `Pending`)
and the calls that make them (attributes of what was made a moment ago).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable

from lamina.stacks.template import SUB_VARIABLE


class NoValue:
    """`!Ref AWS::NoValue`: the property is removed."""


NO_VALUE = NoValue()


@dataclass(frozen=True)
class Pending:
    """A value known only once a resource is made (a new function URL)."""

    name: str

    def __str__(self) -> str:
        return f"(known after deploy: {self.name})"


class ResolveError(Exception):
    pass


# (logical_id, attribute or None for Ref) -> value
Lookup = Callable[[str, str | None], Any]


class Resolver:
    def __init__(self, parameters: dict[str, Any], mappings: dict[str, Any],
                 conditions: dict[str, Any], lookup: Lookup) -> None:
        self.parameters = parameters
        self.mappings = mappings
        self.lookup = lookup
        self._condition_bodies = conditions
        self.conditions: dict[str, bool] = {}
        for name in conditions:
            self.condition(name)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            if name not in self._condition_bodies:
                raise ResolveError(f"condition {name!r} is not defined")
            self.conditions[name] = bool(self.resolve(self._condition_bodies[name]))
        return self.conditions[name]

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return str(node) if isinstance(node, str) else node
        if len(node) == 1:
            (key, value), = node.items()
            function = _FUNCTIONS.get(str(key))
            if function is not None:
                return function(self, value)
        resolved = {str(k): self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        return self.lookup(name, None)

    def _ref(self, value: Any) -> Any:
        return self.ref(str(self.resolve(value)))

    def _get_att(self, value: Any) -> Any:
        parts = value.split(".", 1) if isinstance(value, str) else [self.resolve(v) for v in value]
        return self.lookup(str(parts[0]), str(parts[1]))

    def _sub(self, value: Any) -> Any:
        text, local = (value[0], self.resolve(value[1]) if len(value) > 1 else {}) \
            if isinstance(value, list) else (value, {})
        pending: list[Pending] = []

        def replace(match: Any) -> str:
            name = match.group(1).strip()
            if name in local:
                found = local[name]
            elif "." in name and name not in self.parameters and not name.startswith("AWS::"):
                found = self.lookup(*name.split(".", 1))
            else:
                found = self.ref(name)
            if isinstance(found, Pending):
                pending.append(found)
            return str(found)

        result = SUB_VARIABLE.sub(replace, str(text)).replace("${!", "${")
        return pending[0] if pending else result

    def _join(self, value: Any) -> Any:
        delimiter, items = value
        items = self.resolve(items)
        if any(isinstance(item, Pending) for item in items):
            return next(item for item in items if isinstance(item, Pending))
        return str(delimiter).join(str(item) for item in items)

    def _select(self, value: Any) -> Any:
        index, items = self.resolve(value[0]), self.resolve(value[1])
        try:
            return items[int(index)]
        except (IndexError, ValueError, TypeError):
            raise ResolveError(f"Fn::Select index {index} is outside the list {items}") from None

    def _split(self, value: Any) -> Any:
        delimiter, text = value
        return str(self.resolve(text)).split(str(delimiter))

    def _find_in_map(self, value: Any) -> Any:
        names = [str(self.resolve(v)) for v in value[:3]]
        try:
            return self.resolve(self.mappings[names[0]][names[1]][names[2]])
        except KeyError:
            if len(value) > 3 and isinstance(value[3], dict) and "DefaultValue" in value[3]:
                return self.resolve(value[3]["DefaultValue"])
            raise ResolveError(f"Fn::FindInMap: no {'/'.join(names)} in Mappings") from None

    def _if(self, value: Any) -> Any:
        name, when_true, when_false = value
        return self.resolve(when_true if self.condition(str(name)) else when_false)

    def _equals(self, value: Any) -> bool:
        left, right = (self.resolve(v) for v in value)
        return str(left) == str(right)

    def _and(self, value: Any) -> bool:
        return all(self._truth(v) for v in value)

    def _or(self, value: Any) -> bool:
        return any(self._truth(v) for v in value)

    def _not(self, value: Any) -> bool:
        return not self._truth(value[0])

    def _truth(self, node: Any) -> bool:
        if isinstance(node, dict) and set(node) == {"Condition"}:
            return self.condition(str(node["Condition"]))
        return bool(self.resolve(node))

    def _condition(self, value: Any) -> bool:
        return self.condition(str(value))

    def _base64(self, value: Any) -> str:
        return base64.b64encode(str(self.resolve(value)).encode()).decode()


_FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": Resolver._ref, "Fn::GetAtt": Resolver._get_att, "Fn::Sub": Resolver._sub,
    "Fn::Join": Resolver._join, "Fn::Select": Resolver._select, "Fn::Split": Resolver._split,
    "Fn::FindInMap": Resolver._find_in_map, "Fn::If": Resolver._if, "Fn::Equals": Resolver._equals,
    "Fn::And": Resolver._and, "Fn::Or": Resolver._or, "Fn::Not": Resolver._not,
    "Condition": Resolver._condition, "Fn::Base64": Resolver._base64,
}


def parameter_values(declared: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """Parameters' values from overrides and defaults, checked as CloudFormation checks them."""
    unknown = set(overrides) - set(declared)
    if unknown:
        raise ResolveError(f"--parameter-overrides names {', '.join(sorted(unknown))}, which the "
                           f"template does not declare (declared: {', '.join(declared) or 'none'})")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise ResolveError(f"parameter {name} has no Default: give it with "
                               f"--parameter-overrides {name}=VALUE")
        raw = str(raw) if not isinstance(raw, list) else ",".join(str(v) for v in raw)
        allowed = spec.get("AllowedValues")
        if allowed and raw not in [str(v) for v in allowed]:
            raise ResolveError(f"parameter {name}={raw!r} is not one of {[str(v) for v in allowed]}")
        kind = str(spec.get("Type", "String"))
        if kind == "Number":
            try:
                float(raw)
            except ValueError:
                raise ResolveError(f"parameter {name}={raw!r} is not a Number") from None
        values[name] = raw.split(",") if kind.startswith(("CommaDelimitedList", "List<")) else raw
    return values
