"""Checking deployment packages (.zip) before anything is stored.

A package is read to the end once at upload: every member is decompressed (never
written) so corrupt data, zip-slip names and zip bombs (a member that inflates past
what its header declares, or a total past the unzipped quota) are refused with
AWS's errors before a byte reaches the store. So is anything that would make
unpacking fail later, at every cold start (store.unpacked.package_layout): names
the file system cannot hold, an entry written through a symbolic link, a path
that is both a file and a directory, device files.
"""

from __future__ import annotations

import copy
import io
import zipfile
import zlib
from dataclasses import dataclass

from lamina.errors import InvalidParameterValueException, RequestEntityTooLargeException
from lamina.limits import Limits
from lamina.store.unpacked import (
    EntryKind,
    UnsafePackageError,
    package_layout,
    shown_name,
)

_CHUNK = 1024 * 1024
UNZIP_ERROR = "Could not unzip uploaded file. Please check your file, then try to upload again."
# What zipfile raises for corrupt or unsupported (encrypted, unknown compression) data.
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class PackageInfo:
    zipped_size: int
    unzipped_size: int
    files: int


def inspect_package(data: bytes, limits: Limits, operation: str) -> PackageInfo:
    if len(data) > limits.max_zipped_code_bytes:
        raise RequestEntityTooLargeException(
            f"Request must be smaller than {limits.max_request_bytes} bytes for the "
            f"{operation} operation"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidParameterValueException(UNZIP_ERROR) from None
    total = 0
    files = 0
    with archive:
        members = archive.infolist()
        declared = sum(info.file_size for info in members)
        if declared > limits.max_unzipped_code_bytes:
            raise _unzipped_too_large(limits)
        try:
            layout = package_layout(archive)
        except UnsafePackageError as error:
            raise InvalidParameterValueException(
                f"Could not unzip uploaded file: {error}. Please check your file, then try "
                "to upload again."
            ) from None
        except _CORRUPT:
            raise InvalidParameterValueException(UNZIP_ERROR) from None
        for entry in layout:
            if entry.kind is EntryKind.DIRECTORY:
                continue
            info = entry.info
            files += 1
            real = 0
            # zipfile itself stops inflating at the header's declared size, so a
            # member whose header lies (and whose CRC matches the truncated prefix)
            # would pass here yet inflate fully in another unzip tool. Reading with a
            # larger allowance (more than one chunk, so zipfile does not stop and fail
            # the CRC first) exposes the lie.
            probe = copy.copy(info)
            probe.file_size = info.file_size + 2 * _CHUNK
            try:
                with archive.open(probe) as member:
                    while chunk := member.read(_CHUNK):
                        real += len(chunk)
                        if real > info.file_size:
                            raise InvalidParameterValueException(
                                f"Could not unzip uploaded file: the entry '{shown_name(info.filename)}' "
                                "inflates beyond its declared size."
                            )
            except _CORRUPT:
                raise InvalidParameterValueException(UNZIP_ERROR) from None
            total += real
            if total > limits.max_unzipped_code_bytes:
                raise _unzipped_too_large(limits)
    return PackageInfo(zipped_size=len(data), unzipped_size=total, files=files)


def _unzipped_too_large(limits: Limits) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"Unzipped size must be smaller than {limits.max_unzipped_code_bytes} bytes"
    )
