"""Why an image could not be made ready. Not an AWS error: the environments layer
decides what a client sees when a runtime image is missing."""

from __future__ import annotations


class ImageError(Exception):
    pass


class ImageBuildError(ImageError):
    """mmdebstrap, pip or the image layout step failed."""


class ImagePullError(ImageError):
    """The registry did not give the image (unreachable, unknown, unauthorised)."""


class UnknownImageError(ImageError):
    """No recipe and no registry entry by that name."""
