"""Building deployment packages in tests."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError


def make_zip(files: dict[str, str | bytes], mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def raw_zip(entries: list[tuple[str, bytes, int]], windows: bool = False) -> bytes:
    """A zip with exact names and Unix modes (symlinks, devices, ...), unchecked;
    `windows` makes one the way Windows tools do: no Unix mode at all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if windows:
                info.create_system = 0
                info.external_attr = 0x20  # the DOS "archive" attribute
            else:
                info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


ECHO = make_zip({"app.py": "def handler(event, context):\n    return event\n"})


ROLE = "arn:aws:iam::000000000000:role/lamina-test"


def wait_active(client: Any, name: str) -> dict[str, Any]:
    """Wait, as tools do, until a new function is Active (Pending first, as on
    AWS); its configuration then (with the RevisionId it got on settling)."""
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    return client.get_function_configuration(FunctionName=name)


def wait_updated(client: Any, name: str) -> dict[str, Any]:
    """Wait until the function's last update is no longer InProgress."""
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    return client.get_function_configuration(FunctionName=name)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true, and return that; fail
    with the condition's docstring (or repr) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition.__doc__ or condition}")
        time.sleep(interval)


def function_names(client: Any) -> set[str]:
    """Every function's name, over all of ListFunctions' pages (50 each)."""
    pages = client.get_paginator("list_functions").paginate()
    return {f["FunctionName"] for page in pages for f in page["Functions"]}


def function_args(name: str, code: bytes = ECHO, **overrides: object) -> dict[str, object]:
    """CreateFunction arguments for a small Python function; overrides win."""
    return {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": code},
        **overrides,
    }


@contextlib.contextmanager
def aws_error(client: Any, code: str, status: int | None = None) -> Iterator[pytest.ExceptionInfo]:
    """Expect the AWS error `code`: boto3's own exception class when the model has one."""
    modeled = {shape.name for shape in client.meta.service_model.error_shapes}
    # Errors outside the model (ValidationException, the SigV4 ones) reach boto3 as a
    # plain ClientError carrying the code, exactly as they do against AWS.
    expected = getattr(client.exceptions, code) if code in modeled else ClientError
    with pytest.raises(expected) as info:
        yield info
    error = info.value.response["Error"]
    assert error["Code"] == code, error
    if status is not None:
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def error_message(info: pytest.ExceptionInfo) -> str:
    return info.value.response["Error"]["Message"]


BIN = Path(sys.executable).parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus any AWS/Lamina settings, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMINA_"))}
    return {**env, "HOME": str(home), "COLUMNS": "200", **extra}


def aws_cli(endpoint: str, home: Path, key: str, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`aws lambda ARGS` against endpoint with these credentials and nothing else configured."""
    return subprocess.run(
        [str(BIN / "aws"), "lambda", *args, "--endpoint-url", endpoint, "--region", "us-east-1",
         "--output", "json"],
        env=clean_env(home, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret),
        capture_output=True, text=True, timeout=60,
    )
