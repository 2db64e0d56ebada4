"""EFS file systems and access points, mounted into functions through FileSystemConfigs:
shared between functions, owned by the access point's POSIX user, confined to its root."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.helpers import aws_error, error_message, function_args, make_zip, wait_active

FILES = make_zip({"app.py": (
    "import json, os\n"
    "def write(event, context):\n"
    "    with open(event['path'], 'w') as out:\n"
    "        out.write(event['text'])\n"
    "    info = os.stat(event['path'])\n"
    "    return {'uid': info.st_uid, 'gid': info.st_gid}\n"
    "def read(event, context):\n"
    "    with open(event['path']) as source:\n"
    "        return {'text': source.read()}\n"
    "def link(event, context):\n"
    "    os.symlink(event['target'], event['path'])\n"
    "    return {}\n"
    "def escape(event, context):\n"
    "    results = {}\n"
    "    for path in ('/mnt/shared/../outside.txt', '/mnt/outside.txt',\n"
    "                 '/mnt/shared/../../outside.txt', '/mnt/shared/up/outside.txt'):\n"
    "        try:\n"
    "            results[path] = open(path).read()\n"
    "        except OSError as error:\n"
    "            results[path] = type(error).__name__\n"
    "    try:\n"
    "        os.symlink('..', '/mnt/shared/up')\n"
    "    except FileExistsError:\n"
    "        pass\n"
    "    try:\n"
    "        results['via symlink'] = open('/mnt/shared/up/outside.txt').read()\n"
    "    except OSError as error:\n"
    "        results['via symlink'] = type(error).__name__\n"
    "    found = []\n"
    "    for root, dirs, files in os.walk('/'):\n"
    "        if root == '/':\n"
    "            dirs[:] = [d for d in dirs if d not in ('proc', 'sys', 'dev')]\n"
    "        found += [os.path.join(root, f) for f in files if f == 'outside.txt']\n"
    "    results['found'] = found\n"
    "    results['mnt'] = sorted(os.listdir('/mnt'))\n"
    "    results['above'] = sorted(os.listdir('/mnt/shared/..'))\n"
    "    return results\n"
)})


@pytest.fixture(scope="module")
def efs(server):
    return server.client("efs")


@pytest.fixture(scope="module")
def shared(server, efs) -> dict:
    """A file system with one access point: /shared, as uid/gid 1000, made 0750."""
    fs = efs.create_file_system(CreationToken=f"shared-{uuid.uuid4().hex[:8]}",
                                Tags=[{"Key": "Name", "Value": "shared"}])
    ap = efs.create_access_point(
        FileSystemId=fs["FileSystemId"], PosixUser={"Uid": 1000, "Gid": 1000},
        RootDirectory={"Path": "/shared", "CreationInfo": {
            "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "750"}})
    directory = server.data_dir / "file-systems" / fs["FileSystemId"]
    return {"fs": fs, "ap": ap, "dir": directory}


def mounted(name: str, handler: str, ap_arn: str, path: str = "/mnt/shared") -> dict:
    return function_args(name, FILES, Handler=f"app.{handler}", Timeout=30,
                         FileSystemConfigs=[{"Arn": ap_arn, "LocalMountPath": path}])


def invoke(lam, name: str, payload: dict) -> dict:
    answer = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return body


def test_file_system_and_access_point_are_described_as_efs_does(efs, shared) -> None:
    fs, ap = shared["fs"], shared["ap"]
    assert fs["LifeCycleState"] == "available" and fs["Name"] == "shared"
    assert fs["FileSystemArn"].endswith(f":file-system/{fs['FileSystemId']}")
    described = efs.describe_file_systems(FileSystemId=fs["FileSystemId"])["FileSystems"]
    assert [d["CreationToken"] for d in described] == [fs["CreationToken"]]
    assert ap["AccessPointArn"] == (f"arn:aws:elasticfilesystem:us-east-1:000000000000:"
                                    f"access-point/{ap['AccessPointId']}")
    assert ap["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    assert ap["RootDirectory"]["Path"] == "/shared"
    listed = efs.describe_access_points(FileSystemId=fs["FileSystemId"])["AccessPoints"]
    assert [a["AccessPointId"] for a in listed] == [ap["AccessPointId"]]
    root = shared["dir"] / "shared"
    assert (root.stat().st_uid, root.stat().st_gid, oct(root.stat().st_mode & 0o777)) == \
        (1000, 1000, "0o750")


def test_creation_token_is_idempotent_and_unknown_ids_are_not_found(efs, shared) -> None:
    with aws_error(efs, "FileSystemAlreadyExists", 409):
        efs.create_file_system(CreationToken=shared["fs"]["CreationToken"])
    with aws_error(efs, "FileSystemNotFound", 404):
        efs.describe_file_systems(FileSystemId="fs-0123456789abcdef0")
    with aws_error(efs, "AccessPointNotFound", 404) as info:
        efs.delete_access_point(AccessPointId="fsap-0123456789abcdef0")
    assert error_message(info) == "Access point 'fsap-0123456789abcdef0' does not exist."


def test_file_system_configs_are_validated_as_lambda_does(lam, shared) -> None:
    arn = shared["ap"]["AccessPointArn"]
    with aws_error(lam, "ValidationException", 400):
        lam.create_function(**mounted(f"fs-bad-{uuid.uuid4().hex[:6]}", "read", arn, "/data"))
    missing = arn.rsplit("/", 1)[0] + "/fsap-0123456789abcdef0"
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function(**mounted(f"fs-bad-{uuid.uuid4().hex[:6]}", "read", missing))
    assert missing in error_message(info)


def test_two_functions_share_a_file_owned_by_the_access_point_user(lam, shared) -> None:
    arn = shared["ap"]["AccessPointArn"]
    suffix = uuid.uuid4().hex[:6]
    writer, reader = f"fs-writer-{suffix}", f"fs-reader-{suffix}"
    created = lam.create_function(**mounted(writer, "write", arn))
    assert created["FileSystemConfigs"] == [{"Arn": arn, "LocalMountPath": "/mnt/shared"}]
    lam.create_function(**mounted(reader, "read", arn, "/mnt/data"))
    wait_active(lam, writer)
    wait_active(lam, reader)
    text = f"hello {suffix}"
    invoke(lam, writer, {"path": "/mnt/shared/hello.txt", "text": text})
    assert invoke(lam, reader, {"path": "/mnt/data/hello.txt"}) == {"text": text}
    on_disk = shared["dir"] / "shared" / "hello.txt"
    assert on_disk.read_text() == text
    assert (on_disk.stat().st_uid, on_disk.stat().st_gid) == (1000, 1000)
    # A second environment (another sandbox uid) writes the same file again.
    lam.update_function_configuration(FunctionName=writer, Description="new environment")
    lam.get_waiter("function_updated_v2").wait(FunctionName=writer, WaiterConfig={"Delay": 0.1})
    invoke(lam, writer, {"path": "/mnt/shared/hello.txt", "text": text + " again"})
    assert invoke(lam, reader, {"path": "/mnt/data/hello.txt"}) == {"text": text + " again"}


def test_function_cannot_reach_outside_the_access_point_root(lam, shared) -> None:
    sentinel = f"outside-{uuid.uuid4().hex}"
    # Beside the access point's root, in the file system, and above the file system.
    (shared["dir"] / "outside.txt").write_text(sentinel)
    (shared["dir"].parent / "outside.txt").write_text(sentinel)
    name = f"fs-escape-{uuid.uuid4().hex[:6]}"
    lam.create_function(**mounted(name, "escape", shared["ap"]["AccessPointArn"]))
    wait_active(lam, name)
    results = invoke(lam, name, {})
    assert sentinel not in json.dumps(results)
    assert results["found"] == []
    assert results["mnt"] == ["shared"]
    assert "outside.txt" not in results["above"]


def test_planted_symlink_cannot_turn_an_access_point_root_elsewhere(lam, efs, shared, tmp_path: Path) -> None:
    arn = shared["ap"]["AccessPointArn"]
    name = f"fs-link-{uuid.uuid4().hex[:6]}"
    lam.create_function(**mounted(name, "link", arn))
    wait_active(lam, name)
    # Inside, the link points at the host's directory; the server must never follow it.
    invoke(lam, name, {"path": "/mnt/shared/evil", "target": str(tmp_path)})
    fs_id = shared["fs"]["FileSystemId"]
    with aws_error(efs, "BadRequest", 400):
        efs.create_access_point(FileSystemId=fs_id, RootDirectory={
            "Path": "/shared/evil/made", "CreationInfo": {
                "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "777"}})
    assert not (tmp_path / "made").exists()
    linked = efs.create_access_point(FileSystemId=fs_id, RootDirectory={"Path": "/shared/evil"})
    victim = f"fs-victim-{uuid.uuid4().hex[:6]}"
    lam.create_function(**mounted(victim, "read", linked["AccessPointArn"]))
    wait_active(lam, victim)
    with aws_error(lam, "EFSMountFailureException", 403):
        lam.invoke(FunctionName=victim, Payload=b'{"path": "/mnt/shared/x"}')


def test_deleted_access_point_fails_the_mount(lam, efs, shared) -> None:
    fs_id = shared["fs"]["FileSystemId"]
    ap = efs.create_access_point(FileSystemId=fs_id, RootDirectory={"Path": "/"})
    name = f"fs-gone-{uuid.uuid4().hex[:6]}"
    lam.create_function(**mounted(name, "read", ap["AccessPointArn"]))
    wait_active(lam, name)
    efs.delete_access_point(AccessPointId=ap["AccessPointId"])
    with aws_error(lam, "EFSMountFailureException", 403) as info:
        lam.invoke(FunctionName=name, Payload=b'{"path": "/mnt/shared/x"}')
    assert ap["AccessPointArn"] in error_message(info)
