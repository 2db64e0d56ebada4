// Lamina's Node.js runtime client: runs inside an execution environment.
//
// Speaks the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API the way AWS's Node.js
// runtime does: load the handler (CommonJS or ES module), then loop on
// /invocation/next, supporting async handlers and callback-style ones, and
// report errors with Lambda's Node.js shape ({errorType, errorMessage, trace}).
//
// Response streaming as AWS's Node.js runtime offers it: a handler wrapped in
// `awslambda.streamifyResponse(async (event, responseStream, context) => ...)`
// writes to a stream that is the body of a /response POST in streaming mode
// (chunked, `Lambda-Runtime-Function-Response-Mode: streaming`); an error midway
// ends it with the `Lambda-Runtime-Function-Error-Type`/`-Body` trailers.
// `awslambda.HttpResponseStream.from(stream, {statusCode, headers, cookies})` puts
// the JSON prelude and 8 NUL bytes before the body, for function URLs.
import http from "node:http";
import path from "node:path";
import fs from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import util from "node:util";

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const BASE = "/2018-06-01/runtime";
const taskRoot = process.env.LAMBDA_TASK_ROOT || "/var/task";

// The markers AWS's runtime puts on a streaming handler (shared through Symbol.for,
// so libraries that set them themselves work too).
const HANDLER_STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const HANDLER_HIGHWATERMARK = Symbol.for("aws.lambda.runtime.handler.streaming.highWaterMark");
const STREAM_RESPONSE = "response";
const ERROR_TYPE_TRAILER = "Lambda-Runtime-Function-Error-Type";
const ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body";
const HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response";

class HttpResponseStream {
  // The function URL response prelude: JSON metadata, then 8 NUL bytes, then the body.
  static from(stream, prelude) {
    stream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
    const metadata = JSON.stringify(prelude);
    stream._onBeforeFirstWrite = (write) => {
      write(metadata);
      write(new Uint8Array(8));
    };
    return stream;
  }
}

globalThis.awslambda = {
  HttpResponseStream,
  streamifyResponse(handler, options) {
    handler[HANDLER_STREAMING] = STREAM_RESPONSE;
    if (typeof options?.highWaterMark === "number") {
      handler[HANDLER_HIGHWATERMARK] = Number.parseInt(options.highWaterMark, 10);
    }
    return handler;
  },
};

class InvalidStreamingOperation extends Error {
  constructor(message) {
    super(message);
    this.name = "Runtime.InvalidStreamingOperation";
  }
}

// The response stream handed to a streaming handler: the request body of the
// /response POST, sent as the handler writes (Node sends the headers with the
// first write, so setContentType works until then).
function createResponseStream(requestId, highWaterMark) {
  let started = false;
  let settle;
  const done = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  const req = http.request({
    host, port, method: "POST", path: `${BASE}/invocation/${requestId}/response`,
    agent,
    highWaterMark,
    headers: {
      "Lambda-Runtime-Function-Response-Mode": "streaming",
      "Transfer-Encoding": "chunked",
      Trailer: `${ERROR_TYPE_TRAILER}, ${ERROR_BODY_TRAILER}`,
      "Content-Type": "application/octet-stream",
    },
  }, (res) => {
    res.resume();
    res.on("end", () => settle.resolve(res.statusCode));
    res.on("aborted", () => settle.reject(new Error("Runtime API closed the response stream")));
  });
  req.on("socket", (socket) => socket.setNoDelay(true));
  req.on("error", (err) => settle.reject(err));
  const write = req.write.bind(req);
  const end = req.end.bind(req);
  const beforeFirstWrite = () => {
    if (!started) {
      started = true;
      if (typeof req._onBeforeFirstWrite === "function") req._onBeforeFirstWrite((c) => write(c));
    }
  };
  req.setContentType = (contentType) => {
    if (started) throw new InvalidStreamingOperation("Cannot set content-type, too late.");
    req.setHeader("Content-Type", contentType);
  };
  req.write = (chunk, encoding, callback) => {
    if (typeof chunk !== "string" && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    beforeFirstWrite();
    return write(chunk, encoding, callback);
  };
  req.end = (chunk, encoding, callback) => {
    beforeFirstWrite();
    return end(chunk, encoding, callback);
  };
  const fail = (err) => new Promise((resolve) => {
    const shape = errorShape(err);
    console.error(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(shape)}`);
    if (req.writableEnded) return resolve();
    beforeFirstWrite();
    req.addTrailers({
      [ERROR_TYPE_TRAILER]: shape.errorType,
      [ERROR_BODY_TRAILER]: Buffer.from(JSON.stringify(shape)).toString("base64"),
    });
    end(resolve);
  });
  return { stream: req, done, fail };
}

async function invokeStreaming(handler, event, context, requestId) {
  const { stream, done, fail } = createResponseStream(requestId, handler[HANDLER_HIGHWATERMARK]);
  try {
    const returned = handler(event, stream, context);
    if (!returned || typeof returned.then !== "function") {
      throw new Error("Streaming does not support non-async handlers.");
    }
    const result = await returned;
    if (result !== undefined) console.warn("Streaming handlers ignore return values.");
    // As on Lambda, the invocation lasts until the handler has ended its stream.
    await done;
    if (!stream.writableFinished) throw new Error("Response stream is not finished.");
  } catch (err) {
    await fail(err);
    await done.catch(() => {});
  }
}

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

// Lambda's console: every console.* call is one log record with a timestamp, the
// request id and a level (or a JSON record under LoggingConfig LogFormat=JSON),
// framed on _LAMBDA_TELEMETRY_LOG_FD (AWS's frame: type, length, timestamp in
// microseconds, then the bytes) so a multi-line message stays one log event.
const logging = { requestId: undefined };
function installLogging() {
  const fd = Number(process.env._LAMBDA_TELEMETRY_LOG_FD);
  delete process.env._LAMBDA_TELEMETRY_LOG_FD;
  const json = process.env.AWS_LAMBDA_LOG_FORMAT === "JSON";
  const order = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4, FATAL: 5 };
  const threshold = order[(process.env.AWS_LAMBDA_LOG_LEVEL || "").toUpperCase()] ?? 0;
  const write = (record) => {
    if (!Number.isInteger(fd) || fd <= 0) {
      process.stdout.write(record.replace(/\n/g, "\r") + "\n");
      return;
    }
    const data = Buffer.from(record, "utf8");
    const header = Buffer.alloc(16);
    header.writeUInt32BE(json ? 0xa55a0002 : 0xa55a0003, 0);
    header.writeUInt32BE(data.length, 4);
    header.writeBigUInt64BE(BigInt(Date.now()) * 1000n, 8);
    fs.writeSync(fd, Buffer.concat([header, data]));
  };
  const emit = (level) => (...args) => {
    if (json && order[level] < threshold) return;
    const timestamp = new Date().toISOString();
    if (!json) {
      write(`${timestamp}\t${logging.requestId}\t${level}\t${util.format(...args)}`);
      return;
    }
    const entry = { timestamp, level, requestId: logging.requestId, message: util.format(...args) };
    const error = args.length === 1 && args[0] instanceof Error ? args[0] : undefined;
    if (error) {
      entry.errorType = error.name;
      entry.errorMessage = error.message;
      entry.stackTrace = (error.stack || "").split("\n");
    }
    write(JSON.stringify(entry));
  };
  console.trace = emit("TRACE");
  console.debug = emit("DEBUG");
  console.log = emit("INFO");
  console.info = emit("INFO");
  console.warn = emit("WARN");
  console.error = emit("ERROR");
  console.fatal = emit("FATAL");
}
installLogging();

function errorShape(err, typeOverride) {
  const error = err instanceof Error ? err : new Error(String(err));
  return {
    errorType: typeOverride || error.name || "Error",
    errorMessage: error.message,
    trace: (error.stack || "").split("\n"),
  };
}

async function postError(urlPath, shape, label = "Invoke Error") {
  console.error(`${label} \t${JSON.stringify(shape)}`);
  await request("POST", urlPath, JSON.stringify(shape), {
    "Content-Type": "application/json",
    "Lambda-Runtime-Function-Error-Type": shape.errorType,
  });
}

async function initError(shape) {
  await postError(`${BASE}/init/error`, shape, "Uncaught Exception");
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
    logging.requestId = requestId;
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
    if (handler[HANDLER_STREAMING] === STREAM_RESPONSE) {
      let event;
      try {
        event = next.body ? JSON.parse(next.body) : {};
      } catch (err) {
        await postError(`${BASE}/invocation/${requestId}/error`, errorShape(err));
        continue;
      }
      await invokeStreaming(handler, event, context, requestId);
      continue;
    }
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
