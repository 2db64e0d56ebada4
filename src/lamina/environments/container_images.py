"""Container images pulled in the background for the functions that wait on them, and
how an environment runs one: Lambda's container contract.

Like runtime images (runtime_images.py): CreateFunction answers at once with the
function Pending; the image is pulled on a thread of its own (a 10 GB image takes
minutes), one pull per image however many functions wait on it, and the outcome is
delivered on the event loop, as (StateReasonCode, StateReason) when it failed.

The contract (what AWS's base images and runtime interface clients expect): the
image is `/`, read-only, with a writable `/tmp`; the process is the image's
ENTRYPOINT followed by its CMD, each replaced by ImageConfig's EntryPoint and
Command when given; it starts in ImageConfig's WorkingDirectory, else the image's
WORKDIR, else `/`; the image's ENV lies under the function's variables, which lie
under Lambda's reserved ones (AWS_LAMBDA_RUNTIME_API among them); `_HANDLER` is the
first word of CMD, which AWS's base images take as the handler.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from lamina.images import ImageError
from lamina.images.containers import (
    ContainerImage,
    ContainerImages,
    ImageAccessDeniedError,
    ImageNotFoundError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from lamina.runtimes.catalog import RuntimeSpec

log = logging.getLogger("lamina.environments")
# None, or (StateReasonCode, StateReason).
Settled = Callable[[tuple[str, str] | None], None]


def failure_state(error: BaseException, resolved_uri: str) -> tuple[str, str]:
    """(StateReasonCode, StateReason) for an image that could not be pulled."""
    if isinstance(error, ImageNotFoundError):
        return "ImageDeleted", (f"Source image {resolved_uri} does not exist. Provide a valid source "
                                "image and update the function code.")
    if isinstance(error, ImageAccessDeniedError):
        return "ImageAccessDenied", ("Lambda does not have permission to access the ECR image. Check the "
                                     "ECR permissions.")
    if isinstance(error, ImageTooLargeError):
        return "InvalidImage", f"Source image {resolved_uri} is too large: {error}"
    if isinstance(error, UnsupportedImageError):
        return "InvalidImage", (f"The image manifest, config or layer media type for the source image "
                                f"{resolved_uri} is not supported: {error}")
    return "InternalError", f"Source image {resolved_uri} could not be pulled: {error}"


def container_runtime(image: ContainerImage, entry_point: tuple[str, ...] | None,
                      command: tuple[str, ...] | None) -> RuntimeSpec:
    """How to start `image`: ENTRYPOINT + CMD (ImageConfig's, where given), its ENV."""
    argv = (image.config.entrypoint if entry_point is None else entry_point) + \
        (image.config.command if command is None else command)
    return RuntimeSpec("image", argv, (), None, f"container image {image.digest[:19]}",
                       env=image.config.env)


class ContainerImagePulls:
    """Which container images are here, and pulling the others."""

    def __init__(self, images: ContainerImages) -> None:
        self.images = images
        self._waiting: dict[str, list[Settled]] = {}

    def ready(self, resolved_uri: str) -> bool:
        digest = resolved_uri.rpartition("@")[2]
        return self.images.installed(digest) is not None

    def install(self, resolved_uri: str, on_done: Settled) -> None:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(resolved_uri)
        if waiting is not None:
            waiting.append(on_done)
            return
        self._waiting[resolved_uri] = [on_done]
        threading.Thread(target=self._pull, args=(resolved_uri, loop),
                         name=f"image {resolved_uri}", daemon=True).start()

    def _pull(self, resolved_uri: str, loop: asyncio.AbstractEventLoop) -> None:
        outcome = None
        try:
            image = self.images.ensure(resolved_uri)
            log.info("container image %s is ready (%d bytes)", resolved_uri, image.size)
        except ImageError as error:
            outcome = failure_state(error, resolved_uri)
            log.warning("container image %s could not be pulled: %s", resolved_uri, error)
        except Exception as error:
            log.exception("container image %s", resolved_uri)
            outcome = failure_state(error, resolved_uri)
        try:
            loop.call_soon_threadsafe(self._settled, resolved_uri, outcome)
        except RuntimeError:
            pass  # the server stopped meanwhile; its next start pulls again

    def _settled(self, resolved_uri: str, outcome: tuple[str, str] | None) -> None:
        for on_done in self._waiting.pop(resolved_uri, []):
            try:
                on_done(outcome)
            except Exception:
                log.exception("after container image %s", resolved_uri)
