"""The AWS CLI and the `lamina` command against a real server, as subprocesses."""

from __future__ import annotations

import io
import json
import subprocess
import urllib.request
import zipfile

import pytest

from tests.helpers import (
    BIN,
    ROLE,
    aws_cli,
    aws_error,
    clean_env,
    function_args,
    make_zip,
    wait_active,
)

# -- the AWS CLI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("aws-home")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = aws_cli(server.endpoint, home, "cli-key", "cli-secret", *args)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def test_aws_cli_list_functions_finds_a_function_created_with_boto3(lam, aws):
    lam.create_function(**function_args("cli-aws-listed", Description="made by boto3"))
    listed = json.loads(aws("list-functions").stdout)["Functions"]
    found = [f for f in listed if f["FunctionName"] == "cli-aws-listed"]
    assert len(found) == 1
    assert found[0]["Description"] == "made by boto3"
    assert found[0]["Runtime"] == "python3.11"


def test_aws_cli_get_function_shows_configuration_and_code_location(lam, aws):
    lam.create_function(**function_args("cli-aws-get"))
    created = wait_active(lam, "cli-aws-get")  # its RevisionId changes as it settles, as on AWS
    got = json.loads(aws("get-function", "--function-name", "cli-aws-get").stdout)
    assert got["Configuration"]["CodeSha256"] == created["CodeSha256"]
    assert got["Configuration"]["RevisionId"] == created["RevisionId"]
    assert got["Code"]["Location"].startswith("http://127.0.0.1:")


def test_aws_cli_create_function_from_a_zip_file_is_seen_by_boto3(lam, aws, tmp_path):
    package = tmp_path / "fn.zip"
    package.write_bytes(make_zip({"app.py": "def handler(e, c):\n    return 'cli'\n"}))
    aws("create-function", "--function-name", "cli-aws-created", "--runtime", "python3.11",
        "--handler", "app.handler", "--role", ROLE,
        "--zip-file", f"fileb://{package}", "--memory-size", "256")
    config = lam.get_function_configuration(FunctionName="cli-aws-created")
    assert (config["Runtime"], config["MemorySize"], config["CodeSize"]) == (
        "python3.11", 256, package.stat().st_size)


def test_aws_cli_reports_an_unknown_function_with_the_aws_error(aws):
    result = aws("get-function", "--function-name", "cli-aws-missing", check=False)
    assert result.returncode != 0
    assert "ResourceNotFoundException" in result.stderr
    assert "Function not found: arn:aws:lambda:us-east-1:000000000000:function:cli-aws-missing" in result.stderr


# -- the lamina command --------------------------------------------------------------


@pytest.fixture(scope="module")
def lamina(server, tmp_path_factory):
    env = clean_env(tmp_path_factory.mktemp("lamina-home"), LAMINA_ENDPOINT=server.endpoint)

    def run(*args: str, check: bool = True, columns: int = 200) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / "lamina"), *args], env={**env, "COLUMNS": str(columns)},
                                capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


def test_lamina_deploy_functions_get_delete(lam, lamina, tmp_path):
    source = tmp_path / "hello"
    (source / "lib").mkdir(parents=True)
    (source / "app.py").write_text("def handler(event, context):\n    return 'v1'\n")
    (source / "lib" / "util.py").write_text("X = 1\n")

    created = lamina("deploy", str(source), "--name", "cli-lamina", "--env", "GREETING=hi")
    assert "created" in created.stdout
    config = lam.get_function_configuration(FunctionName="cli-lamina")
    assert config["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert (config["Runtime"], config["Handler"]) == ("python3.11", "app.handler")

    # Deploying again updates code and configuration in place.
    (source / "app.py").write_text("def handler(event, context):\n    return 'v2'\n")
    updated = lamina("deploy", str(source), "--name", "cli-lamina", "--memory", "512", "--timeout", "10")
    assert "updated" in updated.stdout
    after = lam.get_function_configuration(FunctionName="cli-lamina")
    assert after["CodeSha256"] != config["CodeSha256"]
    assert (after["MemorySize"], after["Timeout"]) == (512, 10)

    table = lamina("functions").stdout
    row = next(line for line in table.splitlines() if "cli-lamina" in line)
    assert "python3.11" in row and "512" in row

    shown = json.loads(lamina("get", "cli-lamina").stdout)
    assert shown["Configuration"]["CodeSha256"] == after["CodeSha256"]

    assert "deleted" in lamina("delete", "cli-lamina").stdout
    with aws_error(lam, "ResourceNotFoundException"):
        lam.get_function(FunctionName="cli-lamina")
    missing = lamina("get", "cli-lamina", check=False)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


def test_lamina_deploy_packages_the_directory_tree(lam, lamina, tmp_path):
    source = tmp_path / "tree"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (source / "pkg" / "mod.py").write_text("Y = 2\n")
    (source / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    lamina("deploy", str(source), "--name", "cli-lamina-tree")
    location = lam.get_function(FunctionName="cli-lamina-tree")["Code"]["Location"]
    with urllib.request.urlopen(location) as response:
        names = zipfile.ZipFile(io.BytesIO(response.read())).namelist()
    assert sorted(names) == ["app.py", "pkg/mod.py"]


def test_lamina_functions_shows_long_names_whole_in_a_narrow_terminal(lam, lamina):
    name = "cli-a-rather-long-function-name-that-must-not-be-cut"
    lam.create_function(**function_args(name))
    assert name in lamina("functions", columns=80).stdout


def test_lamina_reports_an_unreachable_server_without_a_traceback(tmp_path):
    result = subprocess.run(
        [str(BIN / "lamina"), "functions", "--endpoint", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, env=clean_env(tmp_path),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_lamina_deploy_refuses_an_env_without_equals_sign_and_creates_nothing(lam, lamina, tmp_path):
    source = tmp_path / "bad-env"
    source.mkdir()
    (source / "app.py").write_text("def handler(event, context):\n    return 1\n")
    result = lamina("deploy", str(source), "--name", "cli-bad-env", "--env", "GREETING", check=False)
    assert result.returncode != 0
    assert "expected KEY=VALUE, got 'GREETING'" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="cli-bad-env")
