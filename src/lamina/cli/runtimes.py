"""`lamina runtimes` and `lamina runtimes install`: the runtime images on this machine.

These work on the local image cache directly (building needs root and a few minutes,
not a server).
"""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lamina.config import Settings, load_settings
from lamina.errors import InvalidParameterValueException
from lamina.images import ImageError, ImageStore, RuntimeImage
from lamina.runtimes.catalog import RuntimeSpec, runtime_spec, supported_runtimes

console = Console()


def _image_settings() -> Settings:
    settings = load_settings()
    return settings.replace(runtime_source="image")


def runs_on(spec: RuntimeSpec, image: RuntimeImage | None) -> str:
    """What runs `spec`, with the exact version once its image is installed."""
    versions = image.versions if image else {}
    if spec.image is None:
        return spec.interpreter
    if spec.execution_env is None:
        parts = ["sh"] + [f"{label} {versions[key]}" for key, label in (("curl", "curl"), ("python", "Python"))
                          if key in versions]
        return "the package's bootstrap (" + ", ".join(parts) + ")"
    language, _, version = spec.interpreter.rpartition(" ")
    exact = versions.get("python" if language == "CPython" else "node")
    return f"{language} {exact}" if exact else f"{language} {version}"


def describe(settings: Settings, store: ImageStore) -> list[tuple[str, RuntimeSpec, RuntimeImage | None]]:
    """Every identifier a new function may use, its spec and its installed image."""
    rows = []
    image_settings = settings.replace(runtime_source="image")
    for identifier in supported_runtimes(image_settings):
        spec = runtime_spec(identifier, image_settings)
        rows.append((identifier, spec, store.installed(spec.image) if spec.image else None))
    return rows


def startup_lines(settings: Settings) -> list[str]:
    """What `lamina serve` says about each runtime when it starts."""
    if settings.runtime_source == "host":
        return [f"runtime {identifier}: {runner} (host)" for identifier, runner in supported_runtimes(settings).items()]
    lines = []
    for identifier, spec, image in describe(settings, ImageStore.from_settings(settings)):
        where = (f"image {spec.image}, {image.source}" if image else
                 f"image {spec.image} not installed yet: made on first use, or now with "
                 f"`lamina runtimes install {identifier}`")
        line = f"runtime {identifier}: {runs_on(spec, image)} ({where})"
        lines.append(line + (f" - warning: {spec.warning}" if spec.warning else ""))
    return lines


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


@click.group(invoke_without_command=True)
@click.pass_context
def runtimes(ctx: click.Context) -> None:
    """The runtime identifiers this machine runs, and the images that run them."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    store = ImageStore.from_settings(settings)
    table = Table("Runtime", "Runs on", "Image", "Source", "Installed", "Size", "Built in")
    warnings = []
    for identifier, spec, image in describe(settings, store):
        table.add_row(
            identifier, runs_on(spec, image), spec.image or "-",
            image.source if image else "-", "yes" if image else "no",
            _megabytes(image.size) if image else "-",
            f"{image.build_seconds:.0f} s" if image else "-",
        )
        if spec.warning:
            warnings.append(spec.warning)
    console.print(table)
    console.print(f"Image cache: {store.cache_dir}", highlight=False)
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if settings.runtime_source == "host":
        console.print("Functions run on this host's own interpreters now (LAMINA_RUNTIME_SOURCE=host); "
                      "set LAMINA_RUNTIME_SOURCE=image to run them on these images.", highlight=False)


@runtimes.command("install")
@click.argument("identifiers", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every runtime listed by `lamina runtimes`.")
@click.option("--refresh", is_flag=True, help="Ask the registry (if one is set) for its newest image.")
def install(identifiers: tuple[str, ...], everything: bool, refresh: bool) -> None:
    """Build or pull the images that run IDENTIFIERS (e.g. python3.13 nodejs22.x)."""
    settings = _image_settings()
    store = ImageStore.from_settings(settings)
    if everything:
        identifiers = tuple(supported_runtimes(settings))
    if not identifiers:
        raise click.UsageError("name at least one runtime identifier, or --all")
    names: dict[str, list[str]] = {}
    for identifier in identifiers:
        try:
            spec = runtime_spec(identifier, settings)
        except InvalidParameterValueException as error:
            raise click.ClickException(error.message) from None
        if spec.image:
            names.setdefault(spec.image, []).append(identifier)
    for name, wanted in names.items():
        _install_one(store, name, wanted, refresh)


def _install_one(store: ImageStore, name: str, identifiers: list[str], refresh: bool) -> None:
    started = time.monotonic()
    label = f"{name} (for {', '.join(identifiers)})"
    with console.status(f"making {label}") as status:
        def progress(line: str) -> None:
            console.print(f"  [dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)
            status.update(f"making {label}: {time.monotonic() - started:.0f} s")
        try:
            image = store.ensure(name, progress, refresh=refresh)
        except ImageError as error:
            raise click.ClickException(f"{name}: {error}") from None
    versions = ", ".join(f"{key} {value}" for key, value in sorted(image.versions.items()))
    console.print(
        f"[green]ready[/green] {label}: {versions}; {_megabytes(image.size)}, {image.source}, "
        f"{image.root}", highlight=False, soft_wrap=True,
    )
