"""Node.js functions on Lamina's Node.js runtime client."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from tests.conftest import ROLE
from tests.helpers import make_zip

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")

ESM = """
let count = 0;
export const handler = async (event, context) => {
  count += 1;
  if (event.fail) throw new TypeError("bad input");
  return { event, count, name: context.functionName, remaining: context.getRemainingTimeInMillis(),
           init: process.env.AWS_LAMBDA_INITIALIZATION_TYPE, execEnv: process.env.AWS_EXECUTION_ENV };
};
"""

COMMONJS = """
exports.handler = function (event, context, callback) {
  callback(null, { commonjs: true, requestId: context.awsRequestId });
};
"""


def _create(lam, files: dict[str, str], handler: str) -> str:
    name = f"node-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Role=ROLE, Handler=handler,
                        Code={"ZipFile": make_zip(files)})
    return name


def _invoke(lam, name: str, event: dict | None = None):
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    return response, json.loads(response["Payload"].read())


def test_async_es_module_handler_runs_and_stays_warm(lam):
    name = _create(lam, {"index.mjs": ESM}, "index.handler")
    response, body = _invoke(lam, name, {"a": 1})
    assert "FunctionError" not in response
    assert body["event"] == {"a": 1} and body["name"] == name and body["remaining"] > 0
    assert body["execEnv"] == "AWS_Lambda_nodejs20.x"
    assert _invoke(lam, name)[1]["count"] == 2


def test_callback_style_commonjs_handler(lam):
    name = _create(lam, {"index.js": COMMONJS}, "index.handler")
    _, body = _invoke(lam, name)
    assert body["commonjs"] is True and len(body["requestId"]) == 36


def test_thrown_error_has_lambdas_nodejs_error_shape(lam):
    name = _create(lam, {"index.mjs": ESM}, "index.handler")
    response, body = _invoke(lam, name, {"fail": True})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError" and body["errorMessage"] == "bad input"
    assert isinstance(body["trace"], list)


def test_missing_module_and_missing_handler_are_init_errors(lam):
    missing_module = _create(lam, {"index.mjs": ESM}, "nothere.handler")
    assert _invoke(lam, missing_module)[1]["errorType"] == "Runtime.ImportModuleError"
    missing_handler = _create(lam, {"index.mjs": ESM}, "index.nope")
    body = _invoke(lam, missing_handler)[1]
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "index.nope is undefined or not exported"
