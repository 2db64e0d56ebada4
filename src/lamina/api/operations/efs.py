"""EFS (`efs`, REST-JSON under /2015-02-01/): file systems and access points that
functions mount through FileSystemConfigs."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateFileSystem", service="efs")
async def create_file_system(call: Call) -> dict[str, Any]:
    return call.platform.file_systems.create_file_system(call.params)


@operation("DescribeFileSystems", service="efs")
async def describe_file_systems(call: Call) -> dict[str, Any]:
    return call.platform.file_systems.describe_file_systems(call.params)


@operation("DeleteFileSystem", service="efs")
async def delete_file_system(call: Call) -> dict[str, Any]:
    call.platform.file_systems.delete_file_system(call.params["FileSystemId"])
    return {}


@operation("CreateAccessPoint", service="efs")
async def create_access_point(call: Call) -> dict[str, Any]:
    return call.platform.file_systems.create_access_point(call.params)


@operation("DescribeAccessPoints", service="efs")
async def describe_access_points(call: Call) -> dict[str, Any]:
    return call.platform.file_systems.describe_access_points(call.params)


@operation("DeleteAccessPoint", service="efs")
async def delete_access_point(call: Call) -> dict[str, Any]:
    call.platform.file_systems.delete_access_point(call.params["AccessPointId"])
    return {}
