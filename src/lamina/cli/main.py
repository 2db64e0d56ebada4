"""`lamina serve | deploy | functions | get | delete`."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import click
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Column, Table

from lamina.cli.client import lambda_client

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


@click.group()
def cli() -> None:
    """Lamina: run AWS Lambda functions on your own machine."""


@cli.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 9000).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where functions, code and logs are kept (default ./data).")
def serve(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Start the Lamina server in the foreground."""
    import uvicorn

    from lamina.api.app import create_app
    from lamina.api.auth import require_keys_for_bind
    from lamina.config import load_settings
    from lamina.platform import Platform

    settings = load_settings(host=host, port=port, data_dir=data_dir)
    require_keys_for_bind(settings.host, settings.credentials)
    platform = Platform(settings)
    app = create_app(platform)
    console.print(
        f"Lamina listening on [bold]http://{settings.host}:{settings.port}[/bold] "
        f"(data in {settings.data_dir.resolve()}, sandbox: {platform.sandbox.name})",
        soft_wrap=True,
    )
    uvicorn.run(
        app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        log_level=settings.log_level, access_log=False,
    )


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
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Function name.")
@click.option("--runtime", default="python3.11", show_default=True)
@click.option("--handler", default="app.handler", show_default=True)
@click.option("--memory", type=int, default=None, help="MemorySize in MB.")
@click.option("--timeout", type=int, default=None, help="Timeout in seconds.")
@click.option("--role", default=DEFAULT_ROLE, show_default=True)
@click.option("--env", "env", multiple=True, help="KEY=VALUE environment variable (repeatable).")
@_endpoint_option
def deploy(source: Path, name: str, runtime: str, handler: str, memory: int | None,
           timeout: int | None, role: str, env: tuple[str, ...], endpoint: str | None) -> None:
    """Zip SOURCE (a directory, or an existing .zip) and create or update function NAME."""
    client = lambda_client(endpoint)
    with console.status("packaging"):
        code = _package(source)
    config: dict[str, Any] = {"Runtime": runtime, "Handler": handler, "Role": role}
    if memory is not None:
        config["MemorySize"] = memory
    if timeout is not None:
        config["Timeout"] = timeout
    if env:
        config["Environment"] = {"Variables": dict(item.split("=", 1) for item in env)}
    with _api_errors(), console.status(f"uploading {len(code):,} bytes"):
        try:
            client.get_function_configuration(FunctionName=name)
            exists = True
        except client.exceptions.ResourceNotFoundException:
            exists = False
        if exists:
            client.update_function_code(FunctionName=name, ZipFile=code)
            client.get_waiter("function_updated_v2").wait(FunctionName=name)
            result = client.update_function_configuration(FunctionName=name, **config)
        else:
            result = client.create_function(FunctionName=name, Code={"ZipFile": code}, **config)
    verb = "updated" if exists else "created"
    console.print(f"[green]{verb}[/green] {result['FunctionArn']} ({result['CodeSize']:,} bytes, "
                  f"sha256 {result['CodeSha256']})")


@cli.command()
@_endpoint_option
def functions(endpoint: str | None) -> None:
    """List functions."""
    client = lambda_client(endpoint)
    with _api_errors():
        found = [f for page in client.get_paginator("list_functions").paginate()
                 for f in page["Functions"]]
    # Names are what users copy into the next command: never fold or cut them;
    # the other columns give way in a narrow terminal.
    longest = max((len(f["FunctionName"]) for f in found), default=4)
    table = Table(Column("Name", no_wrap=True, min_width=longest), "Runtime", "Handler",
                  "Memory", "Timeout", "Code size", "Last modified")
    for f in found:
        table.add_row(f["FunctionName"], f.get("Runtime", "-"), f.get("Handler", "-"),
                      str(f["MemorySize"]), str(f["Timeout"]), f"{f['CodeSize']:,}",
                      f["LastModified"])
    console.print(table)


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
@click.option("--payload", default="{}", show_default=True, help="The event, as JSON.")
@click.option("--qualifier", default=None, help="Version or alias.")
@click.option("--log", "show_log", is_flag=True, help="Print the log tail (LogType=Tail).")
@_endpoint_option
def invoke(name: str, payload: str, qualifier: str | None, show_log: bool,
           endpoint: str | None) -> None:
    """Invoke a function synchronously and print its result."""
    import base64

    args: dict[str, Any] = {"FunctionName": name, "Payload": payload.encode()}
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


@cli.command()
@click.argument("name")
@_endpoint_option
def delete(name: str, endpoint: str | None) -> None:
    """Delete a function."""
    with _api_errors():
        lambda_client(endpoint).delete_function(FunctionName=name)
    console.print(f"[green]deleted[/green] {name}")


if __name__ == "__main__":
    cli()
