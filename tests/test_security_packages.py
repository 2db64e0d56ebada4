"""Deployment packages as an attacker would write them, and the disk their code takes.

Symbolic links behave as on Lambda (kept, resolved inside the sandbox only); what
cannot be unpacked is refused when uploaded, never at every cold start; code that
nothing refers to leaves the disk, and unpacked code stays within its budget.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lamina.store.unpacked import layers_tree_name
from tests.conftest import Server
from tests.helpers import (
    ECHO,
    aws_error,
    error_message,
    function_args,
    make_zip,
    raw_zip,
    wait_for,
)

FILE = 0o100644
LINK = 0o120777
HANDLER = "import os\n\ndef handler(event, context):\n    return {}\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def invoke(lam, name: str, payload: Any = None) -> Any:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    body = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, body
    return body


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file() or p.is_symlink()} if path.exists() else set()


def tree_bytes(path: Path) -> int:
    """Disk used below path (allocated blocks), as `du` counts it."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def blob_path(server: Server, code_sha256: str) -> Path:
    digest = base64.b64decode(code_sha256).hex()
    return server.data_dir / "code" / digest[:2] / f"{digest}.zip"


def trees(server: Server) -> set[str]:
    root = server.data_dir / "unpacked"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.exists() else set()



# -- symbolic links ----------------------------------------------------------------------


def test_a_module_imported_through_a_symlink_in_the_package_runs(lam):
    name = unique("sym-import")
    package = raw_zip([
        ("real/lib.py", b"VALUE = 42\n", FILE),
        ("lib.py", b"real/lib.py", LINK),
        ("app.py", (b"import os\nimport lib\n\ndef handler(event, context):\n"
                   b"    path = os.path.join(os.environ['LAMBDA_TASK_ROOT'], 'lib.py')\n"
                   b"    return {'value': lib.VALUE, 'link': os.readlink(path)}\n"), FILE),
    ])
    created = lam.create_function(**function_args(name, package))
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert invoke(lam, name) == {"value": 42, "link": "real/lib.py"}


def test_a_symlink_to_etc_passwd_reads_the_sandboxs_own_file_never_the_hosts(server, lam):
    if server.sandbox_backend() != "namespaces":
        pytest.skip("the plain-process sandbox shares the host's file system")
    name = unique("sym-passwd")
    package = raw_zip([
        ("passwd", b"/etc/passwd", LINK),
        ("up", b"../../../../../../../../etc/passwd", LINK),
        ("app.py", (b"def handler(event, context):\n"
                   b"    read = lambda path: open(path).read()\n"
                   b"    return {'absolute': read('/var/task/passwd'), 'relative': read('/var/task/up'),\n"
                   b"            'sandbox': read('/etc/passwd')}\n"), FILE),
    ])
    assert lam.create_function(**function_args(name, package))["ResponseMetadata"]["HTTPStatusCode"] == 201
    seen = invoke(lam, name)
    assert seen["absolute"] == seen["relative"] == seen["sandbox"]
    assert seen["sandbox"] != Path("/etc/passwd").read_text()
    assert "sbx_user1051" in seen["sandbox"]


WRITES_THROUGH_LINKS = {
    "absolute": [("link", b"/etc", LINK), ("link/evil.py", b"x = 1\n", FILE)],
    "parent": [("link", b"../../", LINK), ("link/evil.py", b"x = 1\n", FILE)],
    "self": [("link", b".", LINK), ("link/evil.py", b"x = 1\n", FILE)],
    "link-after-entry": [("link/evil.py", b"x = 1\n", FILE), ("link", b"/etc", LINK)],
}


@pytest.mark.parametrize("entries", WRITES_THROUGH_LINKS.values(), ids=WRITES_THROUGH_LINKS.keys())
def test_a_package_writing_through_a_symlink_is_refused_and_writes_nothing(server, lam, entries):
    package = raw_zip([("app.py", HANDLER.encode(), FILE), *entries])
    before = files_under(server.data_dir)
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function(**function_args(unique("sym-write"), package))
    assert error_message(info).startswith("Could not unzip uploaded file: the entry 'link")
    assert error_message(info).endswith("Please check your file, then try to upload again.")
    assert not Path("/etc/evil.py").exists()
    assert not (server.data_dir.parent / "evil.py").exists()
    new = {p for p in files_under(server.data_dir) - before if "logs" not in p.parts}
    assert not [p for p in new if p.suffix == ".zip"], new


# -- what cannot be unpacked is refused at upload -----------------------------------------

UNPACKABLE = {
    "5000-char-name": ([("x" * 5000 + ".py", b"x", FILE)], "has a name of 5003 bytes"),
    "256-byte-name": ([("n" * 253 + ".py", b"x", FILE)], "has a name of 256 bytes"),
    "path-over-path-max": ([("/".join(["d" * 200] * 21), b"x", FILE)], "has a path of 4220 bytes"),
    "char-device": ([("null", b"", 0o020666)], "is a character device"),
    "fifo": ([("pipe", b"", 0o010644)], "is a FIFO"),
    "file-and-directory": ([("lib", b"x", FILE), ("lib/mod.py", b"x", FILE)], "as a file"),
    "empty-symlink": ([("link", b"", LINK)], "symbolic link without a valid target"),
}


@pytest.fixture(scope="module")
def existing_function(lam) -> str:
    name = unique("pkg-update")
    lam.create_function(**function_args(name))
    return name


@pytest.mark.parametrize("operation", ["CreateFunction", "UpdateFunctionCode", "PublishLayerVersion"])
@pytest.mark.parametrize("case", UNPACKABLE.values(), ids=UNPACKABLE.keys())
def test_a_package_that_cannot_be_unpacked_is_refused_by_every_upload(server, lam, existing_function,
                                                                      operation, case):
    entries, problem = case
    package = raw_zip([("app.py", HANDLER.encode(), FILE), *entries])
    blobs = files_under(server.data_dir / "code")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        if operation == "CreateFunction":
            lam.create_function(**function_args(unique("pkg-bad"), package))
        elif operation == "UpdateFunctionCode":
            lam.update_function_code(FunctionName=existing_function, ZipFile=package)
        else:
            lam.publish_layer_version(LayerName=unique("pkg-bad"), Content={"ZipFile": package})
    message = error_message(info)
    assert message.startswith("Could not unzip uploaded file: the entry '") and problem in message
    assert len(message) < 300
    assert files_under(server.data_dir / "code") == blobs
    assert invoke(lam, existing_function, {"still": "works"}) == {"still": "works"}


def test_a_nul_byte_in_an_entry_name_is_refused(lam):
    package = raw_zip([("app.py", HANDLER.encode(), FILE), ("evilXpy", b"x", FILE)])
    package = package.replace(b"evilXpy", b"evil\0py")
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function(**function_args(unique("pkg-nul"), package))
    assert "NUL byte" in error_message(info)


def test_names_at_the_file_systems_limits_are_accepted_and_run(lam):
    longest = "n" * 252 + ".py"
    deep = "/".join(["d" * 254] * 15) + "/deep.txt"
    package = raw_zip([
        (longest, b"VALUE = 'longest'\n", FILE),
        (deep, b"deep", FILE),
        ("app.py", (b"import importlib, os\n\ndef handler(event, context):\n"
                   b"    mod = importlib.import_module(event['module'])\n"
                   b"    os.chdir(os.path.dirname(event['deep']))\n"
                   b"    return {'value': mod.VALUE, 'deep': open('deep.txt').read()}\n"), FILE),
    ])
    name = unique("pkg-limits")
    lam.create_function(**function_args(name, package))
    assert invoke(lam, name, {"module": longest[:-3], "deep": deep}) == {"value": "longest", "deep": "deep"}


# -- code nothing refers to leaves the disk ----------------------------------------------------

ZEROS_MB = 20


def zeros_function(tag: str) -> bytes:
    """A package of a few KB zipped that unpacks to ZEROS_MB MB (distinct per tag)."""
    return make_zip({"app.py": f"# {tag}\ndef handler(event, context):\n    return '{tag}'\n",
                     "zeros.bin": b"\0" * (ZEROS_MB * 1024 * 1024)})


def test_deleted_functions_leave_no_blob_and_no_unpacked_code(start_server):
    server = start_server(name="lamina-gc")
    lam = server.client()
    data = server.data_dir

    def code_bytes() -> int:
        return tree_bytes(data / "code") + tree_bytes(data / "unpacked")

    baseline, baseline_total = code_bytes(), tree_bytes(data)
    usage_before = lam.get_account_settings()["AccountUsage"]["TotalCodeSize"]
    names, zipped = [unique("gc"), unique("gc"), unique("gc")], 0
    for name in names:
        package = zeros_function(name)
        zipped += len(package)
        lam.create_function(**function_args(name, package))
        assert invoke(lam, name) == name
    assert lam.get_account_settings()["AccountUsage"]["TotalCodeSize"] == usage_before + zipped
    assert len(trees(server)) == 3
    with_code = code_bytes()
    assert with_code - baseline > 3 * ZEROS_MB * 1024 * 1024

    for name in names:
        lam.delete_function(FunctionName=name)

    def everything_removed() -> bool:
        """no blob, no unpacked tree, no trash left"""
        return not files_under(data / "code") and not any((data / "unpacked").iterdir())

    wait_for(everything_removed, timeout=30)
    after, after_total = code_bytes(), tree_bytes(data)
    assert lam.get_account_settings()["AccountUsage"]["TotalCodeSize"] == usage_before
    print(f"\ncode and unpacked code: {baseline:,} bytes before, {with_code:,} with 3 functions "
          f"({zipped:,} bytes zipped), {after:,} after deleting them; whole data dir "
          f"{baseline_total:,} -> {after_total:,} bytes")
    assert after <= baseline + 64 * 1024
    # The database and the invocations' log lines remain.
    assert after_total - baseline_total < 2 * 1024 * 1024


def test_code_superseded_by_an_update_goes_unless_a_published_version_keeps_it(server, lam):
    name = unique("gc-update")
    first = lam.create_function(**function_args(name, make_zip({"app.py": f"# {name} 1\n" + HANDLER})))
    lam.publish_version(FunctionName=name)  # version 1 keeps the first code
    second = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": f"# {name} 2\n" + HANDLER}))
    assert blob_path(server, first["CodeSha256"]).exists()
    third = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": f"# {name} 3\n" + HANDLER}))
    assert not blob_path(server, second["CodeSha256"]).exists()
    assert blob_path(server, third["CodeSha256"]).exists()
    lam.delete_function(FunctionName=name, Qualifier="1")
    assert not blob_path(server, first["CodeSha256"]).exists()
    lam.delete_function(FunctionName=name)
    assert not blob_path(server, third["CodeSha256"]).exists()


def test_a_deleted_layer_version_stays_while_a_function_uses_it(server, lam):
    layer = lam.publish_layer_version(LayerName=unique("gc-layer"),
                                      Content={"ZipFile": make_zip({"python/gc_layer_lib.py": "VALUE = 7\n",
                                                                    "pad": uuid.uuid4().hex})})
    unused = lam.publish_layer_version(LayerName=unique("gc-layer-unused"),
                                       Content={"ZipFile": make_zip({"pad": uuid.uuid4().hex})})
    name = unique("gc-layer-user")
    code = make_zip({"app.py": "import gc_layer_lib\n\ndef handler(event, context):\n    return gc_layer_lib.VALUE\n"})
    lam.create_function(**function_args(name, code, Layers=[layer["LayerVersionArn"]]))
    assert invoke(lam, name) == 7
    opt_tree = layers_tree_name([base64.b64decode(layer["Content"]["CodeSha256"]).hex()])
    assert opt_tree in trees(server)
    lam.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])
    lam.delete_layer_version(LayerName=unused["LayerArn"], VersionNumber=unused["Version"])
    assert blob_path(server, layer["Content"]["CodeSha256"]).exists()
    assert not blob_path(server, unused["Content"]["CodeSha256"]).exists()
    assert invoke(lam, name) == 7
    lam.delete_function(FunctionName=name)
    assert not blob_path(server, layer["Content"]["CodeSha256"]).exists()
    wait_for(lambda: opt_tree not in trees(server), timeout=30)


def test_deleting_a_function_does_not_break_its_running_invocation(start_server):
    server = start_server({"LAMINA_ENVIRONMENT_IDLE_S": "2"}, name="lamina-gc-running")
    lam = server.client()
    name = unique("gc-running")
    package = make_zip({
        "app.py": "import time\n\ndef handler(event, context):\n    time.sleep(event['sleep'])\n"
                  "    import late\n    return {'late': late.VALUE, 'data': open('data.txt').read()}\n",
        "late.py": "VALUE = 'imported after the delete'\n",
        "data.txt": "still here",
    })
    created = lam.create_function(**function_args(name, package, Timeout=30))
    digest = base64.b64decode(created["CodeSha256"]).hex()
    results: list[Any] = []
    running = threading.Thread(target=lambda: results.append(invoke(lam, name, {"sleep": 3})))
    running.start()
    wait_for(lambda: digest in trees(server), timeout=30)
    time.sleep(1.0)  # into the handler's sleep
    lam.delete_function(FunctionName=name)
    assert not blob_path(server, created["CodeSha256"]).exists()
    assert digest in trees(server)  # held by the running environment
    running.join(timeout=60)
    assert results == [{"late": "imported after the delete", "data": "still here"}]
    wait_for(lambda: digest not in trees(server), timeout=30)


def test_unpacked_code_is_kept_within_its_budget_and_unpacked_again_on_demand(start_server):
    budget_mb = 30
    server = start_server({"LAMINA_UNPACKED_CODE_MB": str(budget_mb), "LAMINA_ENVIRONMENT_IDLE_S": "1"},
                          name="lamina-budget")
    lam = server.client()
    names = [unique("budget") for _ in range(3)]
    blobs = []
    for name in names:
        created = lam.create_function(**function_args(name, zeros_function(name)))
        blobs.append(blob_path(server, created["CodeSha256"]))
        assert invoke(lam, name) == name

    def within_budget() -> bool:
        """unpacked code within its budget"""
        return tree_bytes(server.data_dir / "unpacked") <= budget_mb * 1024 * 1024

    wait_for(within_budget, timeout=90)
    assert len(trees(server)) == 1
    assert all(blob.exists() for blob in blobs)  # evicted trees are unpacked again from these
    for name in names:
        assert invoke(lam, name) == name


def test_start_up_removes_what_a_crash_left_and_keeps_what_is_used(start_server):
    server = start_server(name="lamina-sweep")
    lam = server.client()
    name = unique("sweep")
    created = lam.create_function(**function_args(name, ECHO))
    assert invoke(lam, name, {"a": 1}) == {"a": 1}
    # As a crash would leave them (a killed server is not restarted here: the start-up
    # reaping of a killed server's cgroups is the sandbox's own concern).
    server.stop()
    unpacked, code = server.data_dir / "unpacked", server.data_dir / "code"
    leftovers = [unpacked / ".tmp-half-built" / "app.py", unpacked / ("f" * 64) / "app.py",
                 unpacked / ".trash-1234" / "x", code / "ff" / (("f" * 64) + ".zip"),
                 code / "ff" / ".tmp-torn"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left over")
    server.start()
    for path in leftovers:
        assert not path.exists(), path
    assert blob_path(server, created["CodeSha256"]).exists()
    assert invoke(server.client(), name, {"b": 2}) == {"b": 2}
    start_line = [line for line in server.log_path.read_text().splitlines() if line.startswith("  code: ")]
    assert start_line and "1 code blobs" in start_line[-1]
