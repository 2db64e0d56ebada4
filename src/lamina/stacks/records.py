"""What a stack made, kept on the deploying machine.

Lamina serves Lambda's API and its neighbours, not CloudFormation's, so a stack is
a client-side idea, as a Terraform state is: this file says which resources a
stack made and with what properties, so the next deploy changes only what changed
and `lamina stack delete` removes exactly those. Records are kept per server
(`$XDG_STATE_HOME/lamina/stacks/<host_port>/NAME.json`). Every function a stack
makes also carries the tags `lamina:stack-name` and `lamina:logical-id`, so the
server itself can tell which stack owns it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


@dataclass
class ResourceState:
    type: str
    physical_id: str
    properties: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    code_sha256: str | None = None


@dataclass
class StackRecord:
    name: str
    endpoint: str
    resources: dict[str, ResourceState] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)       # the order they were made in
    outputs: dict[str, Any] = field(default_factory=dict)
    routes: list[dict[str, str]] = field(default_factory=list)
    template: str = ""
    updated: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> StackRecord:
        data = json.loads(text)
        data["resources"] = {k: ResourceState(**v) for k, v in data.get("resources", {}).items()}
        return cls(**data)


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lamina" / "stacks"


def records_dir(endpoint: str) -> Path:
    where = urlparse(endpoint)
    return _state_dir() / re.sub(r"[^A-Za-z0-9.-]", "_", f"{where.hostname}_{where.port or 80}")


def load(endpoint: str, name: str) -> StackRecord | None:
    path = records_dir(endpoint) / f"{name}.json"
    return StackRecord.from_json(path.read_text()) if path.exists() else None


def save(record: StackRecord) -> None:
    directory = records_dir(record.endpoint)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{record.name}.{os.getpid()}.tmp"
    partial.write_text(record.to_json())
    partial.replace(directory / f"{record.name}.json")


def remove(endpoint: str, name: str) -> None:
    (records_dir(endpoint) / f"{name}.json").unlink(missing_ok=True)


def listed(endpoint: str) -> list[StackRecord]:
    directory = records_dir(endpoint)
    if not directory.is_dir():
        return []
    return [StackRecord.from_json(p.read_text()) for p in sorted(directory.glob("*.json"))]
