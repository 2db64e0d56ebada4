"""The console's "Author from scratch" code: a hello-world package per runtime
family, with the handler name the Lambda console gives it."""

from __future__ import annotations

import io
import zipfile

_PYTHON = '''import json


def lambda_handler(event, context):
    # TODO implement
    return {
        "statusCode": 200,
        "body": json.dumps("Hello from Lamina!"),
    }
'''

_NODEJS = '''export const handler = async (event) => {
  // TODO implement
  const response = {
    statusCode: 200,
    body: JSON.stringify('Hello from Lamina!'),
  };
  return response;
};
'''

# A custom runtime's bootstrap: the Runtime API loop in plain shell.
_BOOTSTRAP = '''#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -LD "$HEADERS" "$API/next")"
  REQUEST_ID="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  curl -sS -X POST "$API/$REQUEST_ID/response" -d "$EVENT" >/dev/null
done
'''


def blank_package(runtime: str) -> tuple[bytes, str]:
    """(the .zip, the handler) of a new function's starting code for a runtime."""
    if runtime.startswith("python"):
        files, handler = {"lambda_function.py": (_PYTHON, 0o644)}, "lambda_function.lambda_handler"
    elif runtime.startswith("nodejs"):
        files, handler = {"index.mjs": (_NODEJS, 0o644)}, "index.handler"
    else:
        files, handler = {"bootstrap": (_BOOTSTRAP, 0o755)}, "bootstrap"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    return buffer.getvalue(), handler
