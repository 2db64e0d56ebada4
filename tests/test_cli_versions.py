"""`lamina deploy --layer --publish`, `lamina versions`, `lamina alias`, `lamina layer`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import Server


def lamina(server: Server, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", *args],
        env={**os.environ, "LAMINA_ENDPOINT": server.endpoint, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_publishes_layers_deploys_with_them_and_manages_versions_and_aliases(server, lam, tmp_path: Path):
    layer_dir = tmp_path / "layer" / "python"
    layer_dir.mkdir(parents=True)
    (layer_dir / "shared.py").write_text("X = 1\n")
    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = lamina(server, "layer", "publish", str(tmp_path / "layer"), "--name", name, "--runtime", "python3.11")
    layer_arn = f"arn:aws:lambda:us-east-1:000000000000:layer:{name}:1"
    assert layer_arn in out

    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def handler(event, context):\n    return event\n")
    out = lamina(server, "deploy", str(code), "--name", name, "--layer", layer_arn, "--publish")
    assert "published version 1" in out
    assert [l["Arn"] for l in lam.get_function_configuration(FunctionName=name, Qualifier="1")["Layers"]] == [layer_arn]

    lamina(server, "deploy", str(code), "--name", name, "--timeout", "7", "--publish")
    table = lamina(server, "versions", name)
    assert "$LATEST" in table and "\u2502 2 " in table

    assert "-> version 1" in lamina(server, "alias", "create", name, "live", "--version", "1")
    out = lamina(server, "alias", "update", name, "live", "--version", "2", "--weight", "1=0.2")
    assert "-> version 2, 20% to version 1" in out
    assert lam.get_alias(FunctionName=name, Name="live")["RoutingConfig"] == {"AdditionalVersionWeights": {"1": 0.2}}
    assert "live" in lamina(server, "alias", "list", name)
    lamina(server, "alias", "update", name, "live", "--no-routing")
    assert "RoutingConfig" not in lam.get_alias(FunctionName=name, Name="live")
    lamina(server, "alias", "delete", name, "live")
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
