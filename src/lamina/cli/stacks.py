"""`lamina deploy [template.yaml]`, `lamina stacks`, `lamina stack delete NAME`.

The template path and options follow `sam deploy`: the default file is
`template.yaml` in the current directory, `samconfig.toml` beside it gives defaults
(`stack_name`, `parameter_overrides`, `confirm_changeset` under
`[<env>.deploy.parameters]` or `[<env>.global.parameters]`), and options on the
command line win.
"""

from __future__ import annotations

import shlex
import time
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lamina.cli.client import DEFAULT_ENDPOINT, lambda_client

console = Console()


def samconfig(template: Path, config_file: str, config_env: str) -> dict[str, Any]:
    """The deploy defaults samconfig.toml gives for `config_env`, as SAM reads them."""
    path = Path(config_file) if Path(config_file).is_absolute() else template.parent / config_file
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise click.ClickException(f"{path}: {error}") from None
    env = data.get(config_env) or {}
    found: dict[str, Any] = {}
    for command in ("global", "deploy"):
        found.update((env.get(command) or {}).get("parameters") or {})
    return found


def parameter_overrides(values: list[str] | tuple[str, ...] | str) -> dict[str, str]:
    """`Key=Value Key2="a b"` or `ParameterKey=Key,ParameterValue=Value`, as SAM takes them."""
    if isinstance(values, str):
        values = [values]
    found: dict[str, str] = {}
    for value in values:
        for item in shlex.split(value):
            if item.startswith("ParameterKey="):
                key_part, _, value_part = item.partition(",")
                found[key_part.split("=", 1)[1]] = value_part.split("=", 1)[1] if "=" in value_part else ""
                continue
            key, sep, rest = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected Key=Value, got {item!r}", param_hint="--parameter-overrides")
            found[key] = rest
    return found


def deploy_template(source: Path | None, stack_name: str | None, overrides: tuple[str, ...], no_confirm: bool,
                    config_file: str, config_env: str, endpoint: str | None) -> None:
    from lamina.stacks.build import BuildError
    from lamina.stacks.deploy import (
        DeployError,
        Stack,
        default_stack_name,
        route_urls,
    )
    from lamina.stacks.template import TemplateError, find_template, load_template

    started = time.monotonic()
    try:
        path = find_template(source)
    except FileNotFoundError as error:
        raise click.ClickException(f"{error} (or give: lamina deploy DIR --name FUNCTION)") from None
    defaults = samconfig(path, config_file, config_env)
    name = stack_name or defaults.get("stack_name") or default_stack_name(path)
    values = {**parameter_overrides(defaults.get("parameter_overrides") or []), **parameter_overrides(overrides)}
    if not no_confirm and defaults.get("confirm_changeset") is False:
        no_confirm = True
    try:
        template = load_template(path)
    except TemplateError as error:
        for line in error.lines():
            console.print(f"[red]error[/red] {escape(line)}", highlight=False, soft_wrap=True)
        raise click.ClickException(f"{path.name} has {len(error.problems)} error(s); nothing was changed") from None
    clients = _clients(endpoint)
    stack = Stack(name, clients, lambda line: console.print(escape(line), highlight=False, soft_wrap=True))

    def build_progress(line: str) -> None:
        console.print(f"  [dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    try:
        plan = stack.plan(template, values, build_progress)
    except (DeployError, BuildError) as error:
        raise click.ClickException(f"{error}; nothing was changed") from None
    for note in template.notes + plan.expanded.notes:
        console.print(f"[yellow]note[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    if plan.empty:
        console.print(f"No changes to deploy. Stack {name} is up to date "
                      f"({time.monotonic() - started:.1f} s).", highlight=False)
        return
    table = Table("Operation", "LogicalResourceId", "ResourceType", "Replacement",
                  title=f"Changeset for stack {name}")
    colours = {"Add": "green", "Modify": "yellow", "Replace": "yellow", "Remove": "red"}
    for change in plan.changes:
        sign = {"Add": "+", "Modify": "*", "Replace": "*", "Remove": "-"}[change.action]
        table.add_row(f"[{colours[change.action]}]{sign} {change.action}[/]", change.logical_id, change.type,
                      "True" if change.replacement else ("N/A" if change.action in ("Add", "Remove") else "False"))
    console.print(table)
    if not no_confirm and not click.confirm("Deploy this changeset?", default=False):
        console.print("Nothing deployed.")
        return
    try:
        record = stack.apply(plan)
    except DeployError as error:
        raise click.ClickException(str(error)) from None
    console.print(f"[green]Successfully created/updated stack[/green] {name} "
                  f"({time.monotonic() - started:.1f} s)", highlight=False)
    _print_outputs(record.outputs)
    routes = route_urls(record)
    if routes:
        console.print("Routes (Api/HttpApi events, served by the function's URL, payload format 2.0):")
        for route, url in routes:
            console.print(f"  {route.method} {route.path} -> {route.function}: {url}", highlight=False,
                          soft_wrap=True)


def _print_outputs(outputs: dict[str, Any]) -> None:
    if not outputs:
        return
    table = Table("Key", "Description", "Value", title="Outputs")
    for key, output in outputs.items():
        value = output["Value"]
        if ".execute-api." in value:
            # Written by hand for API Gateway, which Lamina has not: the routes below serve it.
            value += " (API Gateway's URL; on Lamina see Routes)"
        table.add_row(key, output.get("Description", ""), value)
    console.print(table, soft_wrap=True)


def _clients(endpoint: str | None) -> Any:
    from lamina.stacks.deploy import Clients

    probe = lambda_client(endpoint)
    return Clients(lambda service: probe if service == "lambda" else lambda_client(endpoint, service),
                   probe.meta.endpoint_url, probe.meta.region_name)


def _endpoint_url(endpoint: str | None) -> str:
    return lambda_client(endpoint).meta.endpoint_url or DEFAULT_ENDPOINT


@click.command("stacks")
@click.option("--endpoint", envvar="LAMINA_ENDPOINT", default=None, help="Lamina server URL.")
def stacks(endpoint: str | None) -> None:
    """List the stacks deployed from this machine to the server."""
    from lamina.stacks import records

    table = Table("Stack", "Resources", "Functions", "Last updated", "Template")
    for record in records.listed(_endpoint_url(endpoint)):
        functions = [s.physical_id for s in record.resources.values() if s.type == "AWS::Lambda::Function"]
        table.add_row(record.name, str(len(record.resources)), ", ".join(functions), record.updated,
                      record.template)
    console.print(table)


@click.group("stack")
def stack() -> None:
    """Show or delete a stack deployed with `lamina deploy template.yaml`."""


@stack.command("show")
@click.argument("name")
@click.option("--endpoint", envvar="LAMINA_ENDPOINT", default=None, help="Lamina server URL.")
def stack_show(name: str, endpoint: str | None) -> None:
    """The resources and outputs of stack NAME."""
    from lamina.stacks import records

    record = records.load(_endpoint_url(endpoint), name)
    if record is None:
        raise click.ClickException(f"no stack {name} (see `lamina stacks`)")
    table = Table("LogicalResourceId", "ResourceType", "PhysicalResourceId")
    for logical_id in record.order:
        state = record.resources[logical_id]
        table.add_row(logical_id, state.type, state.physical_id)
    console.print(table, soft_wrap=True)
    _print_outputs(record.outputs)


@stack.command("delete")
@click.argument("name")
@click.option("--no-confirm", is_flag=True, help="Do not ask first.")
@click.option("--endpoint", envvar="LAMINA_ENDPOINT", default=None, help="Lamina server URL.")
def stack_delete(name: str, no_confirm: bool, endpoint: str | None) -> None:
    """Delete stack NAME and every resource it made."""
    from lamina.stacks import records
    from lamina.stacks.deploy import Stack

    clients = _clients(endpoint)
    record = records.load(clients.endpoint, name)
    if record is None:
        raise click.ClickException(f"no stack {name} (see `lamina stacks`)")
    if not no_confirm and not click.confirm(
            f"Delete stack {name} and its {len(record.resources)} resources?", default=False):
        console.print("Nothing deleted.")
        return
    Stack(name, clients, lambda line: console.print(escape(line), highlight=False)).delete(record)
    console.print(f"[green]deleted[/green] stack {name}")
