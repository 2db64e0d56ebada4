"""Runtime images made ready in the background, for the functions that wait on them.

CreateFunction answers at once. When the image of a function's runtime is not on
this machine yet, the control plane keeps the function Pending (as Lambda does while
it prepares one) and asks for the image here; it is built or pulled on a thread of
its own, because that takes up to a minute and the default executor's few threads
are for short blocking work (SQLite, unzip). One build per image at a time however
many functions wait on it; each of them hears the outcome on the event loop, which
owns the control plane's state. The image store's lock per digest keeps a cold start
that asks for the same image meanwhile (EnvironmentPool) from building it twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from lamina.errors import LambdaError
from lamina.images import ImageError, ImageStore
from lamina.runtimes.catalog import runtime_spec

log = logging.getLogger("lamina.environments")
# The outcome of making a runtime ready: None, or why it could not be (a StateReason).
Settled = Callable[[str | None], None]
# Lambda keeps StateReason short; the tail of a failed build's output is for
# `lamina runtimes install`, which shows all of it.
MAX_REASON_CHARS = 600


def summary(error: BaseException) -> str:
    """One line of a build's error. A failed command's error is its first line and
    the last lines it printed: the first of those that apt and mmdebstrap mark as an
    error ("E: ...") says why (the last ones only that they gave up), else the last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0].rstrip(":") if lines else type(error).__name__
    if len(lines) > 1:
        errors = [line for line in lines[1:] if line.startswith("E: ")]
        text += f": {errors[0] if errors else lines[-1]}"
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS] + "..."
    return text.rstrip(".")


def failure_reason(identifier: str, image: str, why: str) -> str:
    """What a user reads in StateReason: what failed, and what to do about it."""
    return (f"The runtime image {image} could not be built: {why}. Run `lamina runtimes "
            f"install {identifier}` to see why, then update the function.")


class RuntimeImages:
    """Which runtimes can start environments now, and making the others ready."""

    def __init__(self, images: ImageStore | None, on_images: bool) -> None:
        # on_images False: runtimes run on the host's interpreters (runtime_source
        # "host", or a sandbox that cannot mount images); nothing to make ready.
        self.images = images if on_images else None
        # Image name -> (identifier, callback) of everyone waiting for the build under way.
        self._waiting: dict[str, list[tuple[str, Settled]]] = {}

    def image_of(self, identifier: str) -> str | None:
        """The image `identifier` runs on here, None if it needs none."""
        if self.images is None:
            return None
        try:
            return runtime_spec(identifier, source="image").image
        except LambdaError:
            # Not a runtime this server runs; CreateFunction refuses it anyway.
            return None

    def ready(self, identifier: str) -> bool:
        """Whether `identifier` can start an environment now (a look in the cache, no build)."""
        image = self.image_of(identifier)
        return image is None or self.images is None or self.images.installed(image) is not None

    def install(self, identifier: str, on_done: Settled) -> None:
        """Make the image of `identifier` ready in the background, then call on_done on
        this event loop: with None, or with the StateReason of the failure."""
        loop = asyncio.get_running_loop()
        image = self.image_of(identifier)
        if image is None:
            loop.call_soon(on_done, None)
            return
        waiting = self._waiting.get(image)
        if waiting is not None:
            waiting.append((identifier, on_done))
            return
        self._waiting[image] = [(identifier, on_done)]
        threading.Thread(target=self._make, args=(image, loop),
                         name=f"runtime image {image}", daemon=True).start()

    def _make(self, image: str, loop: asyncio.AbstractEventLoop) -> None:
        assert self.images is not None
        why = None
        try:
            self.images.ensure(image)
            log.info("runtime image %s is ready", image)
        except ImageError as error:
            why = summary(error)
            log.warning("runtime image %s could not be made: %s", image, error)
        except Exception as error:
            log.exception("runtime image %s", image)
            why = summary(error)
        try:
            loop.call_soon_threadsafe(self._settled, image, why)
        except RuntimeError:
            pass  # the server stopped meanwhile; its next start asks again

    def _settled(self, image: str, why: str | None) -> None:
        for identifier, on_done in self._waiting.pop(image, []):
            try:
                on_done(None if why is None else failure_reason(identifier, image, why))
            except Exception:
                log.exception("after runtime image %s", image)
