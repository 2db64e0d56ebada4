"""PackageType Image in the control plane: what CreateFunction and UpdateFunctionCode
check about an ImageUri before answering, and Lambda's words for what went wrong.

A tag is resolved to its manifest digest at once: the function's CodeSha256 and
ResolvedImageUri are that digest, and a published version keeps it however the tag
moves later. The image itself is pulled in the background while the function is
Pending (environments.container_images, which also says what a failure then becomes:
a Failed state with Lambda's StateReasonCode, ImageDeleted, ImageAccessDenied, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina.errors import InvalidParameterValueException
from lamina.images import ImageError
from lamina.images.containers import (
    OCI_ARCHITECTURES,
    ContainerImages,
    ImageAccessDeniedError,
    ImageNotFoundError,
    ImageReference,
    UnsupportedImageError,
    host_architecture,
)
from lamina.limits import Limits

# Called with the outcome of pulling an image: None, or (StateReasonCode, StateReason).
ImageSettled = Callable[[tuple[str, str] | None], None]


@dataclass(frozen=True)
class ImageCode:
    """The code of an Image function, as FunctionVersion keeps it."""

    image_uri: str
    resolved_image_uri: str
    digest_hex: str


def not_valid(uri: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Source image {uri} is not valid. Provide a valid source image.")


def does_not_exist(uri: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Source image {uri} does not exist. Provide a valid source image.")


ACCESS_DENIED = "Lambda does not have permission to access the ECR image. Check the ECR permissions."


def unsupported(uri: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"The image manifest, config or layer media type for the source image {uri} is not supported.")


def image_config_settings(image_config: dict[str, Any] | None) -> dict[str, Any]:
    """ImageConfig as stored: only the members given (an empty ImageConfig removes it)."""
    return {key: value for key, value in (image_config or {}).items()
            if key in ("EntryPoint", "Command", "WorkingDirectory") and value not in (None, "")}


class ContainerImageCode:
    """Resolves and checks ImageUris for the function registry."""

    def __init__(self, images: ContainerImages | None, limits: Limits) -> None:
        # None: this server cannot run container images (a sandbox that cannot mount an
        # image as `/`); CreateFunction says so.
        self.images = images
        self.limits = limits

    async def resolve(self, image_uri: str, architectures: list[str]) -> ImageCode:
        """The ImageUri's current digest, or InvalidParameterValueException as Lambda
        gives it for what can be checked now (blocking registry calls off the loop)."""
        reference = ImageReference.parse(image_uri)
        if reference is None:
            raise not_valid(image_uri)
        if self.images is None:
            raise InvalidParameterValueException(
                "PackageType Image: this Lamina server cannot run container images (its sandbox "
                "cannot mount an image as the root file system); use Code.ZipFile")
        architecture = (architectures or ["x86_64"])[0]
        if architecture != host_architecture():
            raise InvalidParameterValueException(
                f"Architectures: {architecture} is not supported by this Lamina server, which runs "
                f"{host_architecture()} functions only.")
        try:
            resolved = await asyncio.to_thread(self.images.resolve, image_uri, architecture)
        except ImageNotFoundError:
            raise does_not_exist(image_uri) from None
        except ImageAccessDeniedError:
            raise InvalidParameterValueException(ACCESS_DENIED) from None
        except UnsupportedImageError:
            raise unsupported(image_uri) from None
        except ImageError:
            # The registry cannot be reached: for Lambda, an image it cannot find.
            raise does_not_exist(image_uri) from None
        wanted = OCI_ARCHITECTURES.get(architecture, architecture)
        if resolved.config.architecture and resolved.config.architecture != wanted:
            raise InvalidParameterValueException(
                f"The image manifest, config or layer media type for the source image {image_uri} is "
                f"not supported. Its architecture is {resolved.config.architecture}; the function's "
                f"is {architecture} ({wanted}).")
        if resolved.compressed_size > self.limits.max_image_bytes:
            raise InvalidParameterValueException(
                f"Source image {image_uri} is {resolved.compressed_size} bytes compressed; an image may "
                f"be at most {self.limits.max_image_bytes} bytes unpacked.")
        return ImageCode(image_uri, resolved.resolved_uri, resolved.digest.split(":", 1)[-1])
