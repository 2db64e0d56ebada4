// Lamina's Node.js runtime client: runs inside an execution environment.
//
// Speaks the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API the way AWS's Node.js
// runtime does: load the handler (CommonJS or ES module), then loop on
// /invocation/next, supporting async handlers and callback-style ones, and
// report errors with Lambda's Node.js shape ({errorType, errorMessage, trace}).
import http from "node:http";
import path from "node:path";
import fs from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const BASE = "/2018-06-01/runtime";
const taskRoot = process.env.LAMBDA_TASK_ROOT || "/var/task";

function request(method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, method, path: urlPath, agent, headers: { ...headers, "Content-Length": Buffer.byteLength(body || "") } },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("error", reject);
    req.end(body || "");
  });
}

function errorShape(err, typeOverride) {
  const error = err instanceof Error ? err : new Error(String(err));
  return {
    errorType: typeOverride || error.name || "Error",
    errorMessage: error.message,
    trace: (error.stack || "").split("\n"),
  };
}

async function postError(urlPath, shape) {
  console.error(`${new Date().toISOString()}\tundefined\tERROR\t${JSON.stringify(shape)}`);
  await request("POST", urlPath, JSON.stringify(shape), {
    "Content-Type": "application/json",
    "Lambda-Runtime-Function-Error-Type": shape.errorType,
  });
}

async function initError(shape) {
  await postError(`${BASE}/init/error`, shape);
  process.exit(1);
}

async function loadHandler(handlerName) {
  const dot = handlerName.lastIndexOf(".");
  if (dot < 1) {
    await initError({ errorType: "Runtime.MalformedHandlerName", errorMessage: `Bad handler ${handlerName}`, trace: [] });
  }
  const modulePath = handlerName.slice(0, dot);
  const functionName = handlerName.slice(dot + 1);
  const base = path.resolve(taskRoot, modulePath);
  let mod;
  try {
    const candidates = [".mjs", ".cjs", ".js"].map((ext) => base + ext);
    const found = candidates.find((file) => fs.existsSync(file));
    if (!found) {
      const err = new Error(`Cannot find module '${modulePath}'`);
      err.code = "MODULE_NOT_FOUND";
      throw err;
    }
    if (found.endsWith(".cjs") || (found.endsWith(".js") && !isEsmPackage(path.dirname(found)))) {
      mod = createRequire(path.join(taskRoot, "index.js"))(found);
    } else {
      mod = await import(pathToFileURL(found).href);
    }
  } catch (err) {
    const type = err && err.code === "MODULE_NOT_FOUND" ? "Runtime.ImportModuleError" : "Runtime.UserCodeSyntaxError";
    const shape = errorShape(err, err instanceof SyntaxError ? "Runtime.UserCodeSyntaxError" : type);
    shape.errorMessage = `${err.name}: ${err.message}`;
    await initError(shape);
  }
  const handler = mod[functionName] ?? (mod.default && mod.default[functionName]);
  if (typeof handler !== "function") {
    await initError({
      errorType: "Runtime.HandlerNotFound",
      errorMessage: `${handlerName} is undefined or not exported`,
      trace: [],
    });
  }
  return handler;
}

function isEsmPackage(dir) {
  for (let current = dir; current.startsWith(taskRoot); current = path.dirname(current)) {
    const pkg = path.join(current, "package.json");
    if (fs.existsSync(pkg)) {
      try { return JSON.parse(fs.readFileSync(pkg, "utf8")).type === "module"; } catch { return false; }
    }
    if (current === taskRoot) break;
  }
  return false;
}

function invokeHandler(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      err ? reject(err) : resolve(result);
    };
    try {
      const returned = handler(event, context, callback);
      if (returned && typeof returned.then === "function") {
        returned.then((r) => callback(null, r), (e) => callback(e));
      } else if (handler.length < 3) {
        callback(null, returned);
      }
    } catch (err) {
      callback(err);
    }
  });
}

async function main() {
  const handler = await loadHandler(process.env._HANDLER);
  for (;;) {
    const next = await request("GET", `${BASE}/invocation/next`);
    const requestId = next.headers["lambda-runtime-aws-request-id"];
    const deadline = Number(next.headers["lambda-runtime-deadline-ms"]);
    if (next.headers["lambda-runtime-trace-id"]) {
      process.env._X_AMZN_TRACE_ID = next.headers["lambda-runtime-trace-id"];
    }
    const clientContext = next.headers["lambda-runtime-client-context"];
    const identity = next.headers["lambda-runtime-cognito-identity"];
    const context = {
      awsRequestId: requestId,
      invokedFunctionArn: next.headers["lambda-runtime-invoked-function-arn"],
      functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
      functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
      memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
      clientContext: clientContext ? JSON.parse(clientContext) : undefined,
      identity: identity ? JSON.parse(identity) : undefined,
      callbackWaitsForEmptyEventLoop: true,
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    };
    try {
      const event = next.body ? JSON.parse(next.body) : {};
      const result = await invokeHandler(handler, event, context);
      const body = result === undefined ? "null" : JSON.stringify(result);
      await request("POST", `${BASE}/invocation/${requestId}/response`, body, { "Content-Type": "application/json" });
    } catch (err) {
      await postError(`${BASE}/invocation/${requestId}/error`, errorShape(err));
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
