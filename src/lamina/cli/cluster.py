"""`lamina cluster status`: the nodes of the Ray cluster Lamina runs on."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from lamina.config import load_settings

console = Console()


@click.group()
def cluster() -> None:
    """Cluster mode: environments on the nodes of a Ray cluster."""


@cluster.command("status")
@click.option("--cluster", "address", default=None, metavar="ray://HEAD:PORT",
              help="The Ray cluster (default: LAMINA_CLUSTER).")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def status(address: str | None, as_json: bool) -> None:
    """Nodes, their memory, and the environments on each."""
    settings = load_settings(cluster=address)
    if not settings.cluster:
        raise click.UsageError("name the cluster: --cluster ray://HEAD:10001 or LAMINA_CLUSTER")
    from lamina.cluster.status import cluster_status

    found = cluster_status(settings)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    table = Table("node", "address", "state", "labels", "memory (MB)", "environments", "versions")
    for node in found["nodes"]:
        if not node["alive"]:
            state = "dead"
        elif not node["runs_environments"]:
            state = "no environments"
        else:
            state = node.get("error") or "ready"
        memory = f"{node['memory_in_use_mb']} / {node['memory_mb']}" if "memory_mb" in node else ""
        versions = ", ".join(
            f"{name} ({counts['busy']} busy, {counts['idle']} idle)"
            for name, counts in sorted(node.get("versions", {}).items()))
        table.add_row(node["node_id"][:12], str(node.get("address") or ""), state,
                      ", ".join(sorted(node["labels"])), memory,
                      str(node.get("environments", "")), versions)
    console.print(table)
    running = found["ledger"].get("running") if found["ledger"] else None
    if running:
        console.print("running now: " + ", ".join(f"{k} {v}" for k, v in sorted(running.items())))
