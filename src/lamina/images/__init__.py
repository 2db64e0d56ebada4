"""Runtime images: root file systems built from Debian's packages (mmdebstrap) or
pulled from an OCI registry, content-addressed and cached for every server."""

from lamina.images.errors import (
    ImageBuildError,
    ImageError,
    ImagePullError,
    UnknownImageError,
)
from lamina.images.store import ImageStore, RuntimeImage

__all__ = ["ImageBuildError", "ImageError", "ImagePullError", "ImageStore", "RuntimeImage", "UnknownImageError"]
