"""`lamina serve | runtimes | cost | deploy | functions | get | invoke | concurrency | delete | versions | alias | layer | sign | image | stacks | stack | cluster`."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import click
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Column, Table

from lamina.cli.client import lambda_client
from lamina.cli.cluster import cluster
from lamina.cli.cost import cost
from lamina.cli.images import image
from lamina.cli.runtimes import runtimes
from lamina.cli.stacks import deploy_template, stack, stacks
from lamina.control.code_signatures import DIGEST_PAYLOAD_FORMAT, content_digest, embed

console = Console()
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/lamina"


def _endpoint_option(f: Any) -> Any:
    return click.option(
        "--endpoint", envvar="LAMINA_ENDPOINT", default=None,
        help="Lamina server URL (default http://127.0.0.1:9000, or $LAMINA_ENDPOINT).",
    )(f)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """AWS errors and unreachable servers as one-line messages, not tracebacks."""
    try:
        yield
    except ClientError as error:
        err = error.response.get("Error", {})
        raise click.ClickException(f"{err.get('Code')}: {err.get('Message')}") from None
    except BotoCoreError as error:
        raise click.ClickException(str(error)) from None


def _key_values(_ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param=param)
        pairs.append((key, rest))
    return tuple(pairs)


@click.group(epilog="""\b
Examples:
  lamina serve                                  # the server, on http://127.0.0.1:9000
  lamina deploy                                 # ./template.yaml (SAM) as a stack
  lamina deploy ./fn --name hello --runtime python3.13 --handler app.handler
  lamina invoke hello --payload '{"name": "Ada"}' --log
  lamina invoke hello --payload @event.json     # or: --payload - < event.json
  lamina functions
  lamina logs hello --follow
  lamina stacks                                 # stacks deployed from templates
  lamina stack delete sam-app

\b
boto3 and the AWS CLI reach the same server with --endpoint-url
http://127.0.0.1:9000 and any AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.""")
def cli() -> None:
    """Lamina: run AWS Lambda functions on your own machine."""


class _ServeCommand(click.Command):
    """`serve --help` ends with the operations the server implements, read from the
    registered handlers (so the list cannot drift from the code)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from lamina.api.operations import implemented_operations

        for service, names in implemented_operations().items():
            formatter.write_paragraph()
            formatter.write_text(f"Implemented {service} operations ({len(names)}): {', '.join(names)}.")
        formatter.write_paragraph()
        formatter.write_text("Other operations of the Lambda API answer 400 UnsupportedOperationException.")


@cli.command(cls=_ServeCommand)
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 9000).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where functions, code and logs are kept (default ./data).")
@click.option("--cluster", default=None, metavar="ray://HEAD:PORT",
              help="Run environments on the nodes of this Ray cluster (needs LAMINA_DATABASE_URL).")
def serve(host: str | None, port: int | None, data_dir: Path | None, cluster: str | None) -> None:
    """Start the Lamina server in the foreground."""
    from starlette.middleware import Middleware

    from lamina.api.app import create_app
    from lamina.api.auth import require_keys_for_bind
    from lamina.api.code_urls import CodeUrlSigner
    from lamina.api.server import serve as serve_api
    from lamina.cli.runtimes import startup_lines
    from lamina.config import load_settings
    from lamina.platform import Platform

    settings = load_settings(host=host, port=port, data_dir=data_dir, cluster=cluster)
    require_keys_for_bind(settings.host, settings.credentials)
    if settings.cluster and not settings.database_url:
        raise click.UsageError("--cluster needs a database all front ends share: set "
                               "LAMINA_DATABASE_URL=postgresql+psycopg://...")
    platform = Platform(settings)
    # The console is a client of the API's operations, so it is added from here.
    from lamina.console import ConsoleMiddleware

    code_urls = CodeUrlSigner()
    if platform.cluster is not None:
        # Nodes fetch code from the front end that placed the invocation.
        base = settings.cluster_advertise_url or f"http://{settings.host}:{settings.port}"
        platform.cluster.code_url = functools.partial(code_urls.url, base)
        console.print(f"  cluster: environments on the nodes of {settings.cluster} "
                      f"(code served to them at {base})", soft_wrap=True, highlight=False)
    app = create_app(platform, code_urls, pages=[
        Middleware(ConsoleMiddleware, platform=platform, code_urls=code_urls)])
    console.print(
        f"Lamina listening on [bold]http://{settings.host}:{settings.port}[/bold] "
        f"(data in {settings.data_dir.resolve()}, sandbox: {platform.sandbox.name})",
        soft_wrap=True,
    )
    # What code takes on disk once a crash's leftovers and unreferenced code are gone.
    console.print(f"  code: {platform.code.sweep().describe()} (LAMINA_UNPACKED_CODE_MB)",
                  soft_wrap=True, highlight=False)
    if platform.tracer is not None:
        console.print(f"  tracing: spans over OTLP/HTTP to {platform.tracer.endpoint}",
                      soft_wrap=True, highlight=False)
    # What runs each runtime identifier here (exact versions), said plainly.
    for line in startup_lines(settings):
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    serve_api(app, settings)


def _package(source: Path) -> bytes:
    if source.is_file():
        return source.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(source).as_posix())
    return buffer.getvalue()


@cli.command()
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Function name: deploy SOURCE as this one function.")
@click.option("--runtime", default=None, help="Runtime of a new function (default python3.11).")
@click.option("--handler", default=None, help="Handler of a new function (default app.handler).")
@click.option("--memory", type=int, default=None, help="MemorySize in MB.")
@click.option("--timeout", type=int, default=None, help="Timeout in seconds.")
@click.option("--role", default=None, help=f"Execution role (a new function's default: {DEFAULT_ROLE}).")
@click.option("--env", "env", multiple=True, callback=_key_values,
              help="KEY=VALUE environment variable (repeatable).")
@click.option("--layer", "layers", multiple=True,
              help="Layer version ARN (repeatable, in order); replaces the function's layers.")
@click.option("--publish", is_flag=True, help="Publish a version of the result.")
@click.option("--stack-name", default=None, help="Template: the stack (default: samconfig.toml, or the "
              "template's directory name).")
@click.option("--parameter-overrides", "overrides", multiple=True,
              help="Template: Key=Value pairs for its Parameters (as sam deploy takes them).")
@click.option("--no-confirm", "--no-confirm-changeset", "no_confirm", is_flag=True,
              help="Template: deploy the change set without asking.")
@click.option("--config-file", default="samconfig.toml", show_default=True,
              help="Template: SAM's configuration file, beside the template.")
@click.option("--config-env", default="default", show_default=True, help="Template: its environment.")
@_endpoint_option
def deploy(source: Path | None, name: str | None, runtime: str | None, handler: str | None, memory: int | None,
           timeout: int | None, role: str | None, env: tuple[tuple[str, str], ...], layers: tuple[str, ...],
           publish: bool, stack_name: str | None, overrides: tuple[str, ...], no_confirm: bool,
           config_file: str, config_env: str, endpoint: str | None) -> None:
    """Deploy a SAM template as a stack, or one directory as function NAME.

    \b
    lamina deploy                          # ./template.yaml, as `sam build && sam deploy`
    lamina deploy path/template.yaml --stack-name shop --parameter-overrides "Stage=dev Size=2"
    lamina deploy ./my-function --name hello --runtime nodejs20.x --handler index.handler

    A template's functions and layers are built as `sam build` builds them (pip for
    requirements.txt, npm for package.json, BuildMethod: makefile), cached in
    ~/.cache/lamina/build; the change set is shown before anything changes. For one
    function, only the options given change an existing function.
    """
    if name is None:
        deploy_template(source, stack_name, overrides, no_confirm, config_file, config_env, endpoint)
        return
    if source is None:
        raise click.UsageError("give the directory (or .zip) to deploy as function --name")
    _deploy_function(source, name, runtime, handler, memory, timeout, role, env, layers, publish, endpoint)


def _deploy_function(source: Path, name: str, runtime: str | None, handler: str | None, memory: int | None,
                     timeout: int | None, role: str | None, env: tuple[tuple[str, str], ...],
                     layers: tuple[str, ...], publish: bool, endpoint: str | None) -> None:
    client = lambda_client(endpoint)
    with console.status("packaging"):
        code = _package(source)
    # Only what the user passes changes an existing function: a nodejs20.x function
    # redeployed without --runtime stays nodejs20.x.
    given = {"Runtime": runtime, "Handler": handler, "Role": role, "MemorySize": memory, "Timeout": timeout}
    config: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if env:
        config["Environment"] = {"Variables": dict(env)}
    if layers:
        config["Layers"] = list(layers)
    with _api_errors(), console.status(f"uploading {len(code):,} bytes"):
        try:
            client.get_function_configuration(FunctionName=name)
            exists = True
        except client.exceptions.ResourceNotFoundException:
            exists = False
        if exists:
            result = client.update_function_code(FunctionName=name, ZipFile=code)
            if config:
                client.get_waiter("function_updated_v2").wait(FunctionName=name)
                result = client.update_function_configuration(FunctionName=name, **config)
            if publish:
                client.get_waiter("function_updated_v2").wait(FunctionName=name)
                result = client.publish_version(FunctionName=name)
        else:
            defaults = {"Runtime": "python3.11", "Handler": "app.handler", "Role": DEFAULT_ROLE}
            result = client.create_function(FunctionName=name, Code={"ZipFile": code},
                                            Publish=publish, **{**defaults, **config})
    verb = "updated" if exists else "created"
    console.print(f"[green]{verb}[/green] {result['FunctionArn']} ({result['CodeSize']:,} bytes, "
                  f"sha256 {result['CodeSha256']}, {result.get('Runtime', result.get('PackageType'))}, "
                  f"handler {result.get('Handler', '-')})")
    if publish:
        console.print(f"[green]published[/green] version {result['Version']}")


@cli.command()
@_endpoint_option
def functions(endpoint: str | None) -> None:
    """List functions."""
    client = lambda_client(endpoint)
    with _api_errors():
        found = [f for page in client.get_paginator("list_functions").paginate()
                 for f in page["Functions"]]
        reserved = {f["FunctionName"]: client.get_function_concurrency(
            FunctionName=f["FunctionName"]).get("ReservedConcurrentExecutions") for f in found}
    # Names are what users copy into the next command: never fold or cut them.
    # The rest fits an 80-column terminal: runtimes are short words that must not be
    # cut either, and the date is the day and minute (`lamina get` has the rest).
    longest = max((len(f["FunctionName"]) for f in found), default=4)
    table = Table(Column("Name", no_wrap=True, min_width=longest), Column("Runtime", no_wrap=True),
                  Column("Handler", overflow="fold"), Column("MB", justify="right"),
                  Column("s", justify="right"), Column("Code", justify="right"),
                  Column("Reserved", justify="right"), Column("Modified", no_wrap=True),
                  padding=(0, 1), box=None)
    for f in found:
        limit = reserved[f["FunctionName"]]
        table.add_row(f["FunctionName"], f.get("Runtime") or f.get("PackageType", "-"), f.get("Handler", "-"),
                      str(f["MemorySize"]), str(f["Timeout"]), _size(f["CodeSize"]),
                      "-" if limit is None else str(limit), f["LastModified"][:16].replace("T", " "))
    console.print(table)


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    return f"{size / 1000:,.1f} kB" if size < 1_000_000 else f"{size / 1_000_000:,.1f} MB"


@cli.command()
@click.argument("name")
@_endpoint_option
def get(name: str, endpoint: str | None) -> None:
    """Show a function's configuration."""
    with _api_errors():
        result = lambda_client(endpoint).get_function(FunctionName=name)
    result.pop("ResponseMetadata", None)
    console.print_json(json.dumps(result))


@cli.command()
@click.argument("name")
@click.option("--payload", default="{}", show_default=True,
              help="The event, as JSON; @FILE reads it from a file, - from stdin (like the AWS CLI's fileb://).")
@click.option("--qualifier", default=None, help="Version or alias.")
@click.option("--log", "show_log", is_flag=True, help="Print the log tail (LogType=Tail).")
@_endpoint_option
def invoke(name: str, payload: str, qualifier: str | None, show_log: bool,
           endpoint: str | None) -> None:
    """Invoke a function synchronously and print its result."""
    import base64

    args: dict[str, Any] = {"FunctionName": name, "Payload": _payload(payload)}
    if qualifier:
        args["Qualifier"] = qualifier
    if show_log:
        args["LogType"] = "Tail"
    with _api_errors():
        result = lambda_client(endpoint).invoke(**args)
    body = result["Payload"].read().decode()
    if show_log and "LogResult" in result:
        console.print(base64.b64decode(result["LogResult"]).decode(), markup=False, highlight=False)
    if "FunctionError" in result:
        console.print(f"[red]{result['FunctionError']}[/red] (version {result.get('ExecutedVersion')})")
    click.echo(body)
    if "FunctionError" in result:
        raise SystemExit(1)


def _payload(value: str) -> bytes:
    """--payload as bytes: inline JSON, @FILE (or the AWS CLI's fileb://FILE), or - for
    stdin: past the ~128 kB one argument may hold, a file or a pipe is the only way to
    send a 6 MB event."""
    if value == "-":
        return sys.stdin.buffer.read()
    for prefix in ("@", "fileb://", "file://"):
        if value.startswith(prefix):
            path = value.removeprefix(prefix)
            try:
                return Path(path).expanduser().read_bytes()
            except OSError as error:
                raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="--payload") from None
    return value.encode()


@cli.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they arrive.")
@click.option("--since", default=3600, show_default=True, type=int,
              help="Start this many seconds ago.")
@click.option("--filter", "pattern", default=None, help="Only events containing these terms.")
@_endpoint_option
def logs(name: str, follow: bool, since: int, pattern: str | None, endpoint: str | None) -> None:
    """Print a function's log events (group /aws/lambda/NAME), oldest first."""
    import time

    client = lambda_client(endpoint, "logs")
    group = name if name.startswith("/") else f"/aws/lambda/{name}"
    start = int((time.time() - since) * 1000)
    seen: set[str] = set()
    with _api_errors():
        while True:
            args: dict[str, Any] = {"logGroupName": group, "startTime": start}
            if pattern:
                args["filterPattern"] = pattern
            for page in client.get_paginator("filter_log_events").paginate(**args):
                for event in page["events"]:
                    if event["eventId"] in seen:
                        continue
                    seen.add(event["eventId"])
                    start = max(start, event["timestamp"])
                    moment = time.strftime("%H:%M:%S", time.localtime(event["timestamp"] / 1000))
                    click.echo(f"{moment} {event['logStreamName'][-8:]} {event['message']}")
            if not follow:
                return
            time.sleep(1)


@cli.command()
@click.argument("name")
@_endpoint_option
def concurrency(name: str, endpoint: str | None) -> None:
    """Show a function's concurrency: in use now, reserved, provisioned."""
    client = lambda_client(endpoint)
    with _api_errors():
        found = client.get_function_concurrency(FunctionName=name)
        configs = client.list_provisioned_concurrency_configs(FunctionName=name)
    # A Lamina extension header: AWS has no API for the live number.
    in_use = found["ResponseMetadata"]["HTTPHeaders"].get("x-lamina-concurrent-executions", "?")
    reserved = found.get("ReservedConcurrentExecutions")
    console.print(f"in use: {in_use}")
    console.print(f"reserved: {reserved}" if reserved is not None
                  else "reserved: - (shares the account's unreserved concurrency)")
    provisioned = configs["ProvisionedConcurrencyConfigs"]
    console.print("provisioned:" + ("" if provisioned else " -"))
    for config in provisioned:
        qualifier = config["FunctionArn"].rsplit(":", 1)[1]
        line = (f"  {qualifier}: {config['RequestedProvisionedConcurrentExecutions']} "
                f"({config['Status']}, {config['AllocatedProvisionedConcurrentExecutions']} allocated)")
        if config.get("StatusReason"):
            line += f" {config['StatusReason']}"
        console.print(line, markup=False, highlight=False)


@cli.command()
@click.argument("name")
@_endpoint_option
def delete(name: str, endpoint: str | None) -> None:
    """Delete a function."""
    with _api_errors():
        lambda_client(endpoint).delete_function(FunctionName=name)
    console.print(f"[green]deleted[/green] {name}")



@cli.command()
@click.argument("name")
@_endpoint_option
def versions(name: str, endpoint: str | None) -> None:
    """List the versions of function NAME."""
    client = lambda_client(endpoint)
    table = Table("Version", "Description", "Code SHA-256", "Memory", "Timeout", "Last modified")
    with _api_errors():
        for page in client.get_paginator("list_versions_by_function").paginate(FunctionName=name):
            for v in page["Versions"]:
                table.add_row(v["Version"], v.get("Description", ""), v["CodeSha256"],
                              str(v["MemorySize"]), str(v["Timeout"]), v["LastModified"])
    console.print(table)


def _routing(weights: tuple[str, ...]) -> dict[str, Any] | None:
    """--weight VERSION=SHARE options as a RoutingConfig."""
    if not weights:
        return None
    try:
        pairs = {v: float(w) for v, w in (item.split("=", 1) for item in weights)}
    except ValueError:
        raise click.BadParameter("use VERSION=WEIGHT, e.g. 3=0.1", param_hint="--weight") from None
    return {"AdditionalVersionWeights": pairs}


def _show_alias(verb: str, alias: dict[str, Any]) -> None:
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    routing = "".join(f", {share:.0%} to version {v}" for v, share in weights.items())
    console.print(f"[green]{verb}[/green] {alias['AliasArn']} -> version "
                  f"{alias['FunctionVersion']}{routing}")


@cli.group()
def alias() -> None:
    """Create, update, list and delete function aliases."""


_weight_option = click.option(
    "--weight", "weights", multiple=True,
    help="VERSION=SHARE: send that share (0-1) of invocations to a second version.",
)


@alias.command("create")
@click.argument("function")
@click.argument("name")
@click.option("--version", "version", required=True, help="Version the alias points to.")
@click.option("--description", default="")
@_weight_option
@_endpoint_option
def alias_create(function: str, name: str, version: str, description: str,
                 weights: tuple[str, ...], endpoint: str | None) -> None:
    """Create alias NAME of FUNCTION."""
    extra = {"RoutingConfig": _routing(weights)} if weights else {}
    with _api_errors():
        result = lambda_client(endpoint).create_alias(
            FunctionName=function, Name=name, FunctionVersion=version, Description=description, **extra)
    _show_alias("created", result)


@alias.command("update")
@click.argument("function")
@click.argument("name")
@click.option("--version", "version", default=None, help="Version the alias points to.")
@click.option("--description", default=None)
@_weight_option
@click.option("--no-routing", is_flag=True, help="Send every invocation to the alias's version.")
@_endpoint_option
def alias_update(function: str, name: str, version: str | None, description: str | None,
                 weights: tuple[str, ...], no_routing: bool, endpoint: str | None) -> None:
    """Point alias NAME of FUNCTION elsewhere, or change its traffic split."""
    changes: dict[str, Any] = {}
    if version is not None:
        changes["FunctionVersion"] = version
    if description is not None:
        changes["Description"] = description
    if weights or no_routing:
        changes["RoutingConfig"] = _routing(weights) or {"AdditionalVersionWeights": {}}
    with _api_errors():
        result = lambda_client(endpoint).update_alias(FunctionName=function, Name=name, **changes)
    _show_alias("updated", result)


@alias.command("list")
@click.argument("function")
@_endpoint_option
def alias_list(function: str, endpoint: str | None) -> None:
    """List the aliases of FUNCTION."""
    table = Table("Alias", "Version", "Routing", "Description")
    with _api_errors():
        for page in lambda_client(endpoint).get_paginator("list_aliases").paginate(FunctionName=function):
            for a in page["Aliases"]:
                weights = (a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
                routing = ", ".join(f"{share:.0%} to {v}" for v, share in weights.items())
                table.add_row(a["Name"], a["FunctionVersion"], routing or "-", a.get("Description", ""))
    console.print(table)


@alias.command("delete")
@click.argument("function")
@click.argument("name")
@_endpoint_option
def alias_delete(function: str, name: str, endpoint: str | None) -> None:
    """Delete alias NAME of FUNCTION."""
    with _api_errors():
        lambda_client(endpoint).delete_alias(FunctionName=function, Name=name)
    console.print(f"[green]deleted[/green] alias {name} of {function}")


@cli.group()
def layer() -> None:
    """Publish layers."""


@layer.command("publish")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Layer name.")
@click.option("--description", default="")
@click.option("--runtime", "runtimes", multiple=True, help="Compatible runtime (repeatable).")
@click.option("--architecture", "architectures", multiple=True,
              type=click.Choice(["x86_64", "arm64"]), help="Compatible architecture (repeatable).")
@_endpoint_option
def layer_publish(source: Path, name: str, description: str, runtimes: tuple[str, ...],
                  architectures: tuple[str, ...], endpoint: str | None) -> None:
    """Zip SOURCE (a directory laid out as /opt, or an existing .zip) as a new version of layer NAME."""
    content = _package(source)
    with _api_errors():
        result = lambda_client(endpoint).publish_layer_version(
            LayerName=name, Content={"ZipFile": content}, Description=description,
            CompatibleRuntimes=list(runtimes), CompatibleArchitectures=list(architectures),
        )
    console.print(f"[green]published[/green] {result['LayerVersionArn']} "
                  f"({result['Content']['CodeSize']:,} bytes)")


@cli.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profile", required=True, help="Signing profile name (see `aws signer put-signing-profile`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the signed package here (default: sign PACKAGE in place).")
@_endpoint_option
def sign(package: Path, profile: str, output: Path | None, endpoint: str | None) -> None:
    """Sign the .zip PACKAGE with signing profile PROFILE, for code signing configs.

    The package's SHA-384 goes to the server's signer (SignPayload); the signature
    comes back and is written into the archive's comment (replacing any comment),
    so the package deploys anywhere a zip does. Its files are not changed.
    """
    content = package.read_bytes()
    with _api_errors():
        answer = lambda_client(endpoint, "signer").sign_payload(
            profileName=profile, payload=content_digest(content), payloadFormat=DIGEST_PAYLOAD_FORMAT)
    try:
        signed = embed(content, answer["signature"])
    except ValueError as error:
        raise click.ClickException(f"{package}: {error}") from None
    target = output or package
    target.write_bytes(signed)
    metadata = answer.get("metadata", {})
    console.print(f"[green]signed[/green] {target} with {metadata.get('profileVersionArn', profile)} "
                  f"(job {answer['jobId']})", highlight=False)


cli.add_command(runtimes)
cli.add_command(cluster)
cli.add_command(cost)
cli.add_command(image)
cli.add_command(stacks)
cli.add_command(stack)

if __name__ == "__main__":
    cli()
