"""What `lamina cluster status` shows: every Ray node, and what its agent holds."""

from __future__ import annotations

from typing import Any

import ray

from lamina.cluster.placement import AGENT_PREFIX, LEDGER_NAME, connect, node_labels
from lamina.config import Settings

STATUS_TIMEOUT_S = 5.0


def cluster_status(settings: Settings) -> dict[str, Any]:
    """{"nodes": [...], "ledger": {...}}: each node Ray knows (dead ones too), with
    its agent's memory and environments when it runs environments and answers."""
    connect(settings.cluster, settings.cluster_namespace)
    nodes = []
    for node in ray.nodes():
        resources = node.get("Resources", {})
        entry: dict[str, Any] = {
            "node_id": node["NodeID"], "address": node.get("NodeManagerAddress"),
            "alive": bool(node.get("Alive")),
            "labels": node_labels(node, settings.cluster_node_resource),
            "runs_environments": bool(resources.get(settings.cluster_node_resource)),
        }
        if entry["alive"] and entry["runs_environments"]:
            try:
                agent = ray.get_actor(AGENT_PREFIX + node["NodeID"], namespace=settings.cluster_namespace)
                entry.update(ray.get(agent.status.remote(), timeout=STATUS_TIMEOUT_S))
            except ValueError:
                entry["error"] = "no agent yet (started by the first front end that sees the node)"
            except Exception as error:  # noqa: BLE001 - shown as such
                entry["error"] = f"agent does not answer: {error}"
        nodes.append(entry)
    ledger: Any = {}
    try:
        actor = ray.get_actor(LEDGER_NAME, namespace=settings.cluster_namespace)
        ledger = ray.get(actor.counts.remote(), timeout=STATUS_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - no front end started yet
        pass
    return {"nodes": nodes, "ledger": ledger}
