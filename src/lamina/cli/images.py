"""`lamina image import FILE` and `lamina image list`: container images on this machine.

An image built on a laptop (`docker save -o fn.tar fn:1`, or an OCI image layout
directory) runs without a registry: imported into the image cache, it gets an
ImageUri under lamina.local/ that CreateFunction takes like any other. Like
`lamina runtimes`, these work on the local image cache directly.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from lamina.config import load_settings
from lamina.images import ImageError, ImageStore
from lamina.images.containers import ContainerImages

console = Console()


def _containers() -> ContainerImages:
    settings = load_settings()
    return ContainerImages(settings.image_cache_dir,
                           insecure_registries=ImageStore.from_settings(settings).insecure_registries,
                           auth_file=settings.registry_auth_file, max_bytes=settings.limits.max_image_bytes)


@click.group()
def image() -> None:
    """Container images (PackageType Image) on this machine."""


@image.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", "image_uri", default=None,
              help="ImageUri to give it (default: lamina.local/<its tag>).")
def import_image(source: Path, image_uri: str | None) -> None:
    """Import SOURCE: a `docker save` tarball or an OCI image layout directory."""
    containers = _containers()

    def progress(line: str) -> None:
        console.print(f"  [dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    try:
        imported = containers.import_archive(source.resolve(), image_uri, progress)
    except ImageError as error:
        raise click.ClickException(f"{source}: {error}") from None
    # The ImageUri alone on the last line, for scripts: `uri=$(lamina image import x | tail -1)`.
    console.print(f"[green]imported[/green] {imported.digest}", highlight=False)
    click.echo(imported.image_uri)


@image.command("list")
def list_images() -> None:
    """Every container image in the cache and the ImageUris that name imported ones."""
    containers = _containers()
    names: dict[str, list[str]] = {}
    for imported in containers.imported():
        names.setdefault(imported.digest, []).append(imported.image_uri)
    # One line per ImageUri, unwrapped whatever the terminal's width: easy to grep.
    for found in containers.list():
        for uri in names.get(found.digest) or [found.source.removeprefix("oci ")]:
            click.echo(f"{uri}  {found.digest[:19]}  {found.size / 1e6:,.0f} MB  "
                       f"{len(found.layers)} layers  {found.source}  {found.created}")
    console.print(f"Image cache: {containers.cache_dir}", highlight=False)
