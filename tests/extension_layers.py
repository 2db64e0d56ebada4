"""Extensions written the way their authors write them for Lambda, packaged as layers."""

from __future__ import annotations

from tests.helpers import make_zip

# A bash extension with no tools but bash itself: registers for INVOKE and SHUTDOWN,
# prints each event, prints a last record on SHUTDOWN and exits (or, with
# CRASH_AFTER_INVOKE set, dies in the middle of its post-invoke work).
SHELL_EXTENSION = r"""#!/bin/bash
api=$AWS_LAMBDA_RUNTIME_API
name=${0##*/}
request() {  # METHOD PATH BODY HEADER-LINE: sets $body (and $ext_id when sent)
    exec 3<>"/dev/tcp/${api%:*}/${api##*:}"
    printf '%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\nContent-Length: %d\r\n\r\n%s' \
        "$1" "$2" "$api" "$4" "${#3}" "$3" >&3
    length=0
    while IFS= read -r line <&3; do
        line=${line%$'\r'}
        [ -z "$line" ] && break
        case "${line,,}" in
            lambda-extension-identifier:*) ext_id=${line#*: } ;;
            content-length:*) length=${line#*: } ;;
        esac
    done
    body=""
    if [ "$length" -gt 0 ]; then read -r -N "$length" body <&3; fi
    exec 3<&-
}
request POST /2020-01-01/extension/register '{"events": ["INVOKE", "SHUTDOWN"]}' \
    "Lambda-Extension-Name: $name"
echo "$name registered $ext_id"
while :; do
    request GET /2020-01-01/extension/event/next "" "Lambda-Extension-Identifier: $ext_id"
    case "$body" in
        *'"SHUTDOWN"'*) echo "$name SHUTDOWN $body"; exit 0 ;;
        *) echo "$name INVOKE $body"
           if [ -n "$CRASH_AFTER_INVOKE" ]; then sleep 0.3; exit 7; fi ;;
    esac
done
"""

# A Python extension: registers, subscribes its listener to the Telemetry API's
# platform stream, prints every event and every telemetry record it gets, and
# takes POST_INVOKE_MS after each INVOKE (post-invoke work Lambda bills).
PYTHON_EXTENSION = r"""#!/usr/bin/env python3
import http.client, http.server, json, os, sys, threading, time

NAME = os.path.basename(__file__)
API = os.environ["AWS_LAMBDA_RUNTIME_API"]
POST_INVOKE_MS = int(os.environ.get("POST_INVOKE_MS", "0"))
TELEMETRY = os.environ.get("TELEMETRY_TYPES", "")


def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(API)
    connection.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers=headers or {})
    response = connection.getresponse()
    return response, response.read()


TELEMETRY_FILE = os.environ.get("TELEMETRY_FILE")
TELEMETRY_API = os.environ.get("TELEMETRY_API", "/2022-07-01/telemetry")


class Listener(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for item in batch:
            if TELEMETRY_FILE:  # not printed: that would be more extension output
                with open(TELEMETRY_FILE, "a") as out:
                    out.write(json.dumps(item) + "\n")
            else:
                print(f"{NAME} TELEMETRY {json.dumps(item)}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


response, _ = call("POST", "/2020-01-01/extension/register", {"events": ["INVOKE", "SHUTDOWN"]},
                   {"Lambda-Extension-Name": NAME})
ext_id = response.getheader("Lambda-Extension-Identifier")
print(f"{NAME} registered", flush=True)
if TELEMETRY:
    server = http.server.ThreadingHTTPServer(("sandbox.localdomain", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    response, answer = call("PUT", TELEMETRY_API, {
        "schemaVersion": "2022-12-13", "types": TELEMETRY.split(","),
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
        "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}"},
    }, {"Lambda-Extension-Identifier": ext_id})
    print(f"{NAME} subscribed {response.status} {answer.decode()}", flush=True)
while True:
    response, body = call("GET", "/2020-01-01/extension/event/next",
                          headers={"Lambda-Extension-Identifier": ext_id})
    event = json.loads(body)
    print(f"{NAME} {event['eventType']} {json.dumps(event)}", flush=True)
    if event["eventType"] == "SHUTDOWN":
        time.sleep(0.2)  # the last telemetry batch
        sys.exit(0)
    time.sleep(POST_INVOKE_MS / 1000)
"""

CRASHING_EXTENSION = """#!/bin/bash
echo "crasher starting and failing"
exit 3
"""

EXEC_WRAPPER = """#!/bin/bash
export WRAPPED_BY="$0"
exec "$@"
"""


def extension_layer(files: dict[str, str]) -> bytes:
    """A layer zip whose files are executable (extensions and wrapper scripts)."""
    return make_zip(files, mode=0o755)
