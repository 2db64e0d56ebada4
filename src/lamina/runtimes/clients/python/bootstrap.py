"""Lamina's Python runtime client: runs inside an execution environment.

It speaks the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API exactly as AWS's own
Python runtime does: import the handler (reporting init errors with Lambda's error
types), then loop on /invocation/next, calling the handler with the event and a
context object, posting the result or the error. Standard library only: it runs on
the function's interpreter, not Lamina's.
"""

import _json
import os
import sys
import time
from _socket import IPPROTO_TCP, TCP_NODELAY, socket

# Imported lazily: `http.client`, `logging` and `traceback` would add tens of
# milliseconds to every cold start, and most functions never need them. `json`
# too: it brings `re` and `enum`, half a megabyte of every idle environment's own
# memory; events and results go through the same C scanner and encoder that
# `json.loads` and `json.dumps` use (below), and through `json` itself once the
# function has imported it (so whatever it changed there applies, as before).


class _ScannerContext:
    # What json.JSONDecoder() hands its C scanner.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]  # any object with these attributes
_WHITESPACE = " \t\n\r"


def _not_serializable(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def loads(data):
    """json.loads(data), for bytes or str."""
    json = sys.modules.get("json")
    if json is None:
        try:
            text = data
            if isinstance(data, bytes):
                # json.loads sniffs UTF-16/32 and a BOM from the first bytes; plain
                # UTF-8 has neither.
                if data[:3] == b"\xef\xbb\xbf" or 0 in data[:4]:
                    raise ValueError
                text = data.decode("utf-8", "surrogatepass")
            start = len(text) - len(text.lstrip(_WHITESPACE))
            value, end = _scan(text, start)
            if not text[end:].strip(_WHITESPACE):
                return value
        except (ValueError, StopIteration):
            pass
        import json
    return json.loads(data)


def dumps(value):
    """json.dumps(value)."""
    json = sys.modules.get("json")
    if json is not None:
        return json.dumps(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    encode = _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                ": ", ", ", False, False, True)
    return "".join(encode(value, 0))

RUNTIME_API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"
JSON_LOGS = os.environ.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"


class LogSink:
    """Where log records go: framed on the environment's log descriptor, one record
    one event however many lines it has (AWS's frame: >IIQ type, length,
    timestamp in microseconds, then the bytes); stdout when there is none."""

    TEXT, JSON = 0xA55A0003, 0xA55A0002

    def __init__(self):
        fd = os.environ.pop("_LAMBDA_TELEMETRY_LOG_FD", None)
        self.fd = int(fd) if fd and fd.isdigit() else None

    def write(self, record):
        if self.fd is None:
            sys.stdout.write(record if record.endswith("\n") else record + "\n")
            sys.stdout.flush()
            return
        import struct

        data = record.encode("utf-8", "replace")
        kind = self.JSON if JSON_LOGS else self.TEXT
        frame = struct.pack(">IIQ", kind, len(data), int(time.time() * 1_000_000)) + data
        # Whatever the function printed first reaches the log before this record.
        sys.stdout.flush()
        while frame:
            frame = frame[os.write(self.fd, frame):]


LOG = LogSink()


def utc_timestamp(seconds=None):
    now = time.time() if seconds is None else seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def getheader(self, name):
        return self.headers.get(name.lower())


class RuntimeClient:
    """HTTP/1.1 with one kept-alive connection, on the C socket module.

    The Runtime API always answers with a Content-Length, so this is all the HTTP
    a runtime client needs; a warm invoke costs two small requests on it.
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buffer = b""
        self._next_request = (f"GET {BASE}/invocation/next HTTP/1.1\r\nHost: {host}\r\n"
                              f"Content-Length: 0\r\n\r\n").encode("latin-1")
        # A GET /next went out with the last request; its answer is still to be read.
        self.next_sent = False

    def _connect(self):
        self.sock = socket()
        self.sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        self.sock.connect(self.address)
        self.buffer = b""

    def _read_until(self, marker):
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Runtime API closed the connection")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, size):
        while len(self.buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self.buffer)))
            if not chunk:
                raise ConnectionError("Runtime API closed the connection")
            self.buffer += chunk
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def request(self, method, path, body=b"", headers=None, then_next=False):
        """One request's response. With then_next, a GET /next follows it on the wire
        at once (HTTP/1.1 pipelining; the Runtime API answers in order): after an
        invocation's result, one send and one wake-up of the server instead of two."""
        if self.sock is None:
            self._connect()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address[0]}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        if then_next:
            data += self._next_request
        self.sock.sendall(data)
        self.next_sent = then_next
        return self._read_response()

    def _read_response(self):
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        parsed = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        payload = self._read_exactly(int(parsed.get("content-length", "0")))
        return Response(status, parsed, payload)

    def next(self):
        if self.next_sent:
            self.next_sent = False
            return self._read_response()
        return self.request("GET", BASE + "/invocation/next")

    def post_response(self, request_id, body):
        self.request("POST", f"{BASE}/invocation/{request_id}/response", body,
                     {"Content-Type": "application/json"}, then_next=True)

    def post_error(self, path, error, then_next=True):
        self.request("POST", path, dumps(error).encode(),
                     {"Content-Type": "application/json",
                      "Lambda-Runtime-Function-Error-Type": error["errorType"]},
                     then_next=then_next)


class CognitoIdentity:
    def __init__(self, data):
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class ClientContext:
    def __init__(self, data):
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    def __init__(self, request_id, deadline_ms, function_arn, client_context, identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = ClientContext(loads(client_context)) if client_context else None
        self.identity = CognitoIdentity(loads(identity)) if identity else None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message):
        sys.stdout.write(message)


def error_shape(exc, request_id="", error_type=None, skip_frames=0):
    import traceback

    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None else None
    frames = traceback.extract_tb(tb)
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def log_error(error, request_id=""):
    """An unhandled error as one record: Lambda's text line and traceback, or JSON."""
    if JSON_LOGS:
        LOG.write(dumps({
            "timestamp": utc_timestamp(), "level": "ERROR", "message": error["errorMessage"],
            "logger": "root", "requestId": request_id, "errorType": error["errorType"],
            "errorMessage": error["errorMessage"], "stackTrace": error["stackTrace"],
        }))
        return
    record = f"[ERROR] {error['errorType']}: {error['errorMessage']}"
    if error["stackTrace"]:
        record += "\nTraceback (most recent call last):\n" + "".join(error["stackTrace"]).rstrip("\n")
    LOG.write(record)


def report_init_error(client, error):
    log_error(error)
    client.post_error(BASE + "/init/error", error, then_next=False)
    sys.exit(1)


def load_handler(client, handler_name):
    module_path, _, function_name = handler_name.rpartition(".")
    if not module_path or not function_name:
        report_init_error(client, {
            "errorMessage": f"Bad handler '{handler_name}': not enough values to unpack "
                            "(expected 2, got 1)",
            "errorType": "Runtime.MalformedHandlerName", "requestId": "", "stackTrace": [],
        })
    module_name = module_path.replace("/", ".")
    try:
        if module_name.startswith(".") or ".." in module_name:
            import importlib  # its errors for relative and empty names, as Lambda's

            module = importlib.import_module(module_name)
        else:
            # What importlib.import_module does for an absolute name, without
            # importing importlib (and warnings): 100 KB of every idle environment.
            __import__(module_name)
            module = sys.modules[module_name]
    except SyntaxError as exc:
        import traceback

        report_init_error(client, {
            "errorMessage": f"Syntax error in module '{module_name}': {exc}",
            "errorType": "Runtime.UserCodeSyntaxError", "requestId": "",
            "stackTrace": traceback.format_exception_only(type(exc), exc),
        })
    except ImportError as exc:
        report_init_error(client, {
            "errorMessage": f"Unable to import module '{module_name}': {exc}",
            "errorType": "Runtime.ImportModuleError", "requestId": "", "stackTrace": [],
        })
    except Exception as exc:
        report_init_error(client, error_shape(exc))
    handler = getattr(module, function_name, None)
    if handler is None:
        report_init_error(client, {
            "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'",
            "errorType": "Runtime.HandlerNotFound", "requestId": "", "stackTrace": [],
        })
    return handler


class RequestId:
    current = ""


def configure_logging(logging):
    """The root handler and format AWS's Python runtime installs: each record one
    framed log event, Lambda's text layout or its JSON record."""

    class RequestIdFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = RequestId.current
            return True

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                LOG.write(self.format(record))
            except Exception:
                self.handleError(record)

    class JsonFormatter(logging.Formatter):
        def format(self, record):
            entry = {"timestamp": utc_timestamp(record.created), "level": record.levelname,
                     "message": record.getMessage(), "logger": record.name,
                     "requestId": getattr(record, "aws_request_id", "")}
            if record.exc_info and record.exc_info[0] is not None:
                import traceback

                error = record.exc_info[1]
                entry["errorType"] = type(error).__name__
                entry["errorMessage"] = str(error)
                entry["stackTrace"] = traceback.format_tb(record.exc_info[2])
            entry["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
            import json

            return json.dumps(entry, default=str)

    handler = LambdaLoggerHandler()
    if JSON_LOGS:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S"))
        handler.formatter.converter = time.gmtime
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        # Python has no TRACE or FATAL; Lambda maps them to DEBUG and CRITICAL.
        root.setLevel({"TRACE": "DEBUG", "FATAL": "CRITICAL"}.get(level.upper(), level.upper()))


class LoggingOnImport:
    """Configures logging the moment anything first imports it.

    AWS's runtime configures the root logger before the function's module is
    imported, so `logger.setLevel(logging.INFO)` at import time works, and a
    library that adds its own handler (Powertools' Logger filters the root's
    handlers) sees Lambda's handler already there. Importing `logging` up front
    would cost every cold start about 10 ms; this finder costs nothing until the
    function imports it, and then runs just after the module body.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_configure(module):
            exec_module(module)
            configure_logging(module)

        spec.loader.exec_module = exec_and_configure
        return spec


def snapshot(client, template):
    """SnapStart: the end of INIT in the version's template (before-snapshot hooks),
    then the zygote's loop (lamina_zygote.py). Returns in each restored environment,
    after its after-restore hooks."""
    import lamina_zygote
    import snapshot_restore_py

    for hook, args, kwargs in snapshot_restore_py.get_before_snapshot():
        try:
            hook(*args, **kwargs)
        except Exception as exc:
            report_init_error(client, error_shape(exc, error_type="Runtime.BeforeSnapshotError"))
    reason = template.alone()
    if reason:
        report_init_error(client, {"errorMessage": reason, "errorType": "Runtime.SnapshotError",
                                   "requestId": "", "stackTrace": []})
    # INIT is over once the runtime asks for work; the template only asks, and the
    # request stays unanswered: no invocation ever runs in a template.
    if client.sock is None:
        client._connect()
    client.sock.sendall(client._next_request)
    client.sock.close()
    client.sock, client.buffer = None, b""
    sys.stdout.flush()
    LOG.fd = template.serve(LOG.fd)["log_fd"]
    # Restored: a new environment, its own namespaces, pipes and variables.
    global RUNTIME_API
    RUNTIME_API = os.environ["AWS_LAMBDA_RUNTIME_API"]
    lamina_zygote.reseed()
    for hook, args, kwargs in snapshot_restore_py.get_after_restore():
        try:
            hook(*args, **kwargs)
        except Exception as exc:
            report_init_error(client, error_shape(exc, error_type="Runtime.AfterRestoreError"))


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    opt = sys.argv[1] if len(sys.argv) > 1 else "/opt"
    # Lambda's import order: the function's code, then layers under /opt, then the
    # runtime's own packages (boto3) in /var/lang, so a bundled boto3 wins.
    sys.path[0:0] = [task_root, f"{opt}/python", f"{opt}/python/lib/{minor}/site-packages"]
    sys.path.append(f"/var/lang/lib/{minor}/site-packages")
    os.chdir(task_root)
    client = RuntimeClient(RUNTIME_API)
    template = None
    if "_LAMINA_ZYGOTE_FD" in os.environ:
        import lamina_zygote

        template = lamina_zygote.Template()
    if "logging" in sys.modules:
        configure_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, LoggingOnImport())
    handler = load_handler(client, os.environ["_HANDLER"])
    if template is not None:
        snapshot(client, template)
    while True:
        response = client.next()
        body = response.body
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        trace_id = response.getheader("Lambda-Runtime-Trace-Id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        RequestId.current = request_id
        context = LambdaContext(
            request_id,
            int(response.getheader("Lambda-Runtime-Deadline-Ms") or 0),
            response.getheader("Lambda-Runtime-Invoked-Function-Arn"),
            response.getheader("Lambda-Runtime-Client-Context"),
            response.getheader("Lambda-Runtime-Cognito-Identity"),
        )
        error_path = f"{BASE}/invocation/{request_id}/error"
        try:
            event = loads(body) if body else {}
            result = handler(event, context)
        except Exception as exc:
            # Frame 0 is this loop; users see only their own frames, as on Lambda.
            error = error_shape(exc, request_id, skip_frames=1)
            log_error(error, request_id)
            client.post_error(error_path, error)
            continue
        try:
            payload = dumps(result).encode()
        except (TypeError, ValueError) as exc:
            error = {"errorMessage": f"Unable to marshal response: {exc}",
                     "errorType": "Runtime.MarshalError", "requestId": request_id,
                     "stackTrace": []}
            log_error(error, request_id)
            client.post_error(error_path, error)
            continue
        client.post_response(request_id, payload)


if __name__ == "__main__":
    main()
