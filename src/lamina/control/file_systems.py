"""EFS file systems and access points, backed by host directories Lamina manages.

A file system is a directory `<file_systems_root>/<fs-id>` (data_dir/file-systems by
default, or the `file_systems_dir` setting, e.g. an NFS mount several servers
share). An access point is a view of one directory of it (RootDirectory.Path,
made with CreationInfo's owner and permissions if missing) under one POSIX
identity (PosixUser): a function configured with it (FileSystemConfigs) sees that
directory, read-write, at its LocalMountPath, and every file it creates there is
owned on disk by the access point's uid and gid, whichever host uid its sandbox
runs as (sandbox/file_systems.py does the mapping). Nothing above the root
directory is reachable, as with EFS.

Unlike Lambda, no VPC is needed: the directory is mounted straight into the
sandbox, without mount targets or network.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lamina.control.arns import Region
from lamina.errors import (
    AccessPointAlreadyExists,
    AccessPointLimitExceeded,
    AccessPointNotFound,
    BadRequest,
    EFSMountFailureException,
    FileSystemAlreadyExists,
    FileSystemLimitExceeded,
    FileSystemNotFound,
    InvalidParameterValueException,
)
from lamina.limits import Limits
from lamina.sandbox.base import FileSystemMount
from lamina.sandbox.file_systems import open_beneath
from lamina.store.file_systems import FileSystemStore

# The identity of a function's file operations when its access point names no
# PosixUser: Lambda's sbx_user1051 (the NFS client's own user, as on EFS).
DEFAULT_UID = 993
DEFAULT_GID = 990
PAGE_SIZE = 100


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def _timestamp(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def _name(tags: list[dict[str, str]]) -> str | None:
    return next((tag["Value"] for tag in tags if tag.get("Key") == "Name"), None)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


@dataclass(frozen=True)
class AccessPoint:
    access_point_id: str
    file_system_id: str
    uid: int
    gid: int
    # RootDirectory.Path, relative to the file system's own root.
    path: str


class FileSystems:
    def __init__(self, store: FileSystemStore, root: Path, region: Region, limits: Limits) -> None:
        self.store = store
        self.root = root
        self.region = region
        self.limits = limits

    def _arn(self, kind: str, resource_id: str) -> str:
        return (f"arn:aws:elasticfilesystem:{self.region.region}:{self.region.account_id}:"
                f"{kind}/{resource_id}")

    def directory(self, file_system_id: str) -> Path:
        return self.root / file_system_id

    @staticmethod
    def _id_of(identifier: str) -> str:
        """An id, or the id at the end of an ARN (the model allows both)."""
        return identifier.rsplit("/", 1)[-1]

    # -- file systems ---------------------------------------------------------------

    def create_file_system(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params["CreationToken"]
        existing = self.store.file_system_by_token(token)
        if existing is not None:
            raise FileSystemAlreadyExists(
                f"File system '{existing['FileSystemId']}' already exists with creation token "
                f"'{token}'", ErrorCode="FileSystemAlreadyExists",
                FileSystemId=existing["FileSystemId"])
        if self.store.count_file_systems() >= self.limits.max_file_systems:
            raise FileSystemLimitExceeded(
                f"You have reached the maximum number of file systems ({self.limits.max_file_systems}) "
                "in this account.", ErrorCode="FileSystemLimitExceeded")
        fs_id = _new_id("fs")
        tags = params.get("Tags") or []
        config: dict[str, Any] = {
            "OwnerId": self.region.account_id,
            "CreationToken": token,
            "FileSystemId": fs_id,
            "FileSystemArn": self._arn("file-system", fs_id),
            "CreationTime": _now(),
            "LifeCycleState": "available",
            "NumberOfMountTargets": 0,
            "PerformanceMode": params.get("PerformanceMode", "generalPurpose"),
            "ThroughputMode": params.get("ThroughputMode", "bursting"),
            "Encrypted": bool(params.get("Encrypted", False)),
            "Tags": tags,
        }
        if _name(tags) is not None:
            config["Name"] = _name(tags)
        if params.get("KmsKeyId"):
            config["KmsKeyId"] = params["KmsKeyId"]
        directory = self.directory(fs_id)
        # Like an empty EFS file system: a root directory owned by root, 0755.
        directory.mkdir(parents=True, mode=0o755)
        if not self.store.create_file_system(fs_id, token, config):
            shutil.rmtree(directory, ignore_errors=True)
            return self.create_file_system(params)  # the token's creator won: answer as above
        return self._describe_file_system(config)

    def _describe_file_system(self, config: dict[str, Any]) -> dict[str, Any]:
        described = dict(config)
        described["CreationTime"] = _timestamp(config["CreationTime"])
        # Not metered: an empty EFS file system's size.
        described["SizeInBytes"] = {"Value": 6144, "Timestamp": _timestamp(_now())}
        return described

    def _file_system(self, identifier: str) -> dict[str, Any]:
        fs_id = self._id_of(identifier)
        config = self.store.file_system(fs_id)
        if config is None:
            raise FileSystemNotFound(f"File system '{fs_id}' does not exist.",
                                     ErrorCode="FileSystemNotFound")
        return config

    def describe_file_systems(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("FileSystemId"):
            found = [self._file_system(params["FileSystemId"])]
        elif params.get("CreationToken"):
            one = self.store.file_system_by_token(params["CreationToken"])
            found = [one] if one is not None else []
        else:
            found = self.store.list_file_systems()
        page, next_marker = self._page([c["FileSystemId"] for c in found], found,
                                       params.get("Marker"), params.get("MaxItems"))
        output: dict[str, Any] = {"FileSystems": [self._describe_file_system(c) for c in page]}
        if params.get("Marker"):
            output["Marker"] = params["Marker"]
        if next_marker:
            output["NextMarker"] = next_marker
        return output

    def delete_file_system(self, identifier: str) -> None:
        """The file system, its access points and its files, as EFS deletes them.
        Functions still configured with its access points fail to mount it."""
        fs_id = self._file_system(identifier)["FileSystemId"]
        for access_point in self.store.access_points(fs_id):
            self.store.delete_access_point(access_point["AccessPointId"])
        self.store.delete_file_system(fs_id)
        shutil.rmtree(self.directory(fs_id), ignore_errors=True)

    # -- access points --------------------------------------------------------------

    def create_access_point(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params["ClientToken"]
        existing = self.store.access_point_by_token(token)
        if existing is not None:
            raise AccessPointAlreadyExists(
                f"Access point '{existing['AccessPointId']}' already exists with client token "
                f"'{token}'", ErrorCode="AccessPointAlreadyExists",
                AccessPointId=existing["AccessPointId"])
        fs = self._file_system(params["FileSystemId"])
        fs_id = fs["FileSystemId"]
        if len(self.store.access_points(fs_id)) >= self.limits.max_access_points:
            raise AccessPointLimitExceeded(
                f"You have reached the maximum number of access points "
                f"({self.limits.max_access_points}) for your file system {fs_id}.",
                ErrorCode="AccessPointLimitExceeded")
        root = dict(params.get("RootDirectory") or {})
        root.setdefault("Path", "/")
        path = PurePosixPath(root["Path"])
        if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
            raise BadRequest("RootDirectory.Path must be an absolute path without . or .. "
                             "components.", ErrorCode="BadRequest")
        creation = root.get("CreationInfo")
        if creation is not None:
            self._make_root(fs_id, str(path), creation)
        ap_id = _new_id("fsap")
        tags = params.get("Tags") or []
        config: dict[str, Any] = {
            "ClientToken": token,
            "Tags": tags,
            "AccessPointId": ap_id,
            "AccessPointArn": self._arn("access-point", ap_id),
            "FileSystemId": fs_id,
            "RootDirectory": root,
            "OwnerId": self.region.account_id,
            "LifeCycleState": "available",
        }
        if params.get("PosixUser"):
            config["PosixUser"] = params["PosixUser"]
        if _name(tags) is not None:
            config["Name"] = _name(tags)
        if not self.store.create_access_point(ap_id, fs_id, token, config):
            return self.create_access_point(params)  # the token's creator won
        return config

    def _make_root(self, fs_id: str, path: str, creation: dict[str, Any]) -> None:
        """RootDirectory.Path with CreationInfo's owner and permissions, if missing
        (EFS makes it when first mounted; made now, so a typo shows at once)."""
        parts = [part for part in path.split("/") if part]
        if not parts:
            return
        # One component at a time, never following a link: functions write in this
        # tree, and a link they planted must not make the server (root) create or
        # chown anything elsewhere.
        fd = os.open(self.directory(fs_id), os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
                try:
                    child = os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError:
                    raise BadRequest(f"RootDirectory.Path {path}: {part} is not a directory.",
                                     ErrorCode="BadRequest") from None
                os.close(fd)
                fd = child
                if last and made:
                    os.fchown(fd, int(creation["OwnerUid"]), int(creation["OwnerGid"]))
                    os.fchmod(fd, int(str(creation["Permissions"]), 8))
        finally:
            os.close(fd)

    def _access_point(self, identifier: str) -> dict[str, Any]:
        ap_id = self._id_of(identifier)
        config = self.store.access_point(ap_id)
        if config is None:
            raise AccessPointNotFound(f"Access point '{ap_id}' does not exist.",
                                      ErrorCode="AccessPointNotFound")
        return config

    def describe_access_points(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("AccessPointId") and params.get("FileSystemId"):
            raise BadRequest("You can specify either AccessPointId or FileSystemId, not both.",
                             ErrorCode="BadRequest")
        if params.get("AccessPointId"):
            found = [self._access_point(params["AccessPointId"])]
        elif params.get("FileSystemId"):
            found = self.store.access_points(self._file_system(params["FileSystemId"])["FileSystemId"])
        else:
            found = self.store.access_points()
        page, next_token = self._page([c["AccessPointId"] for c in found], found,
                                      params.get("NextToken"), params.get("MaxResults"))
        output: dict[str, Any] = {"AccessPoints": page}
        if next_token:
            output["NextToken"] = next_token
        return output

    def delete_access_point(self, identifier: str) -> None:
        ap_id = self._access_point(identifier)["AccessPointId"]
        self.store.delete_access_point(ap_id)

    @staticmethod
    def _page(ids: list[str], items: list[dict[str, Any]], marker: str | None,
              size: int | None) -> tuple[list[dict[str, Any]], str | None]:
        start = 0
        if marker:
            if marker not in ids:
                raise BadRequest("Invalid marker.", ErrorCode="BadRequest")
            start = ids.index(marker)
        end = start + (size or PAGE_SIZE)
        return items[start:end], ids[end] if end < len(ids) else None

    # -- functions ------------------------------------------------------------------

    def access_point(self, arn: str) -> AccessPoint | None:
        """The access point an ARN of this region and account names, if it exists."""
        prefix = self._arn("access-point", "")
        if not arn.startswith(prefix):
            return None
        config = self.store.access_point(arn[len(prefix):])
        if config is None:
            return None
        posix = config.get("PosixUser") or {}
        return AccessPoint(
            access_point_id=config["AccessPointId"], file_system_id=config["FileSystemId"],
            uid=int(posix.get("Uid", DEFAULT_UID)), gid=int(posix.get("Gid", DEFAULT_GID)),
            path=config["RootDirectory"].get("Path", "/"))

    def check_function_configs(self, configs: list[dict[str, str]]) -> None:
        """FileSystemConfigs on Create/UpdateFunctionConfiguration."""
        for item in configs:
            if self.access_point(item["Arn"]) is None:
                raise InvalidParameterValueException(
                    f"FileSystemConfigs: the EFS access point {item['Arn']} does not exist "
                    f"(access points of this server: {self._arn('access-point', 'fsap-...')}).")

    def mounts(self, configs: tuple[tuple[str, str], ...]) -> tuple[FileSystemMount, ...]:
        """What an environment mounts for FileSystemConfigs ((Arn, LocalMountPath), ...):
        EFSMountFailureException when an access point or its root directory is gone."""
        mounts = []
        for arn, local_path in configs:
            access_point = self.access_point(arn)
            try:
                if access_point is None:
                    raise FileNotFoundError(arn)
                base = self.directory(access_point.file_system_id)
                os.close(open_beneath(base, access_point.path))
            except OSError:
                raise EFSMountFailureException(
                    f"The function couldn't mount the Amazon EFS file system with access point {arn}: "
                    "the access point, its file system or its root directory does not exist.") from None
            mounts.append(FileSystemMount(file_system_dir=base, path=access_point.path,
                                          target=local_path, uid=access_point.uid,
                                          gid=access_point.gid))
        return tuple(mounts)
