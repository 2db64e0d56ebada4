"""The console's pages: server-rendered (Jinja2), made lively with htmx.

Every page works as plain HTML forms and links; htmx only spares a reload where
the Lambda console does (the Test result, loading an event into the editor, the
live log tail). Reads and changes go through `ApiClient`, the API's own
operations, so what the console shows and refuses is what boto3 would get.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lamina.console import charts, metrics
from lamina.console.access import COOKIE, SESSION_S, ConsoleAccess
from lamina.console.blueprints import blank_package
from lamina.console.client import ApiClient, ApiError
from lamina.console.samples import SAMPLE_EVENTS, sample_event
from lamina.platform import Platform
from lamina.runtimes.catalog import supported_runtimes
from lamina.store.test_events import TestEventStore

PREFIX = "/console"
HERE = Path(__file__).parent
PAGE_SIZE = 50
TABS = ("code", "test", "monitor", "configuration", "aliases", "versions")
# The Lambda console's rule for a saved event's name.
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,25}$")
_REPORT_FIELDS = re.compile(r"(Duration|Billed Duration|Memory Size|Max Memory Used|"
                            r"Init Duration|Restore Duration): ([\d.]+ \w+)")
# Source files the viewer shows as text (bigger ones are listed, not shown).
MAX_VIEWED_BYTES = 512 * 1024
LOG_TAIL_S = 15 * 60
LOG_TAIL_LINES = 100


@dataclass
class Page:
    """A page's request, its caller and its API client."""

    request: Request
    api: ApiClient


def _report(log: str) -> dict[str, str]:
    """The REPORT line's figures, by name."""
    for line in reversed(log.splitlines()):
        if line.startswith("REPORT "):
            return dict(_REPORT_FIELDS.findall(line))
    return {}


def _environment_text(variables: dict[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in variables.items())


def _environment_of(text: str) -> dict[str, str]:
    variables = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            variables[key.strip()] = value.strip()
    return variables


def _int_or_text(value: str) -> int | str:
    """A number field as typed: an int, or the text itself for the API to refuse."""
    try:
        return int(value.strip())
    except ValueError:
        return value


class Console:
    def __init__(self, platform: Platform, code_urls: object) -> None:
        self.platform = platform
        self.code_urls = code_urls
        self.access = ConsoleAccess(platform.settings)
        self.test_events = TestEventStore(platform.engine)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]))
        self.templates.globals.update(prefix=PREFIX, quote=quote, tabs=TABS)

    # -- plumbing ------------------------------------------------------------------

    def render(self, request: Request, template_name: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        context.setdefault("signed_in", self.access.asks_for_key)
        html = self.templates.get_template(template_name).render(request=request, **context)
        return HTMLResponse(html, status_code=status)

    async def form(self, request: Request) -> FormData:
        """The posted form; a field may be as large as an API request (an event near
        Invoke's 6 MB is refused by Invoke's own limit, with its message)."""
        return await request.form(max_part_size=self.platform.settings.limits.max_request_bytes)

    def page(self, handler: Callable[[Page], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """A route handler that needs a signed-in (or loopback) user."""
        async def endpoint(request: Request) -> Response:
            principal = self.access.principal(request)
            if principal is None:
                if self.access.asks_for_key:
                    return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}", 303)
                return self.render(request, "denied.html", 403)
            if request.method == "POST" and not self.access.same_origin(request):
                return self.render(request, "denied.html", 403)
            return await handler(Page(request, ApiClient(self.platform, request, principal)))

        return endpoint

    def app(self) -> Starlette:
        p = self.page
        routes = [
            Route(PREFIX, self.redirect_home),
            Route(PREFIX + "/", p(self.functions)),
            Route(PREFIX + "/login", self.login, methods=["GET", "POST"]),
            Route(PREFIX + "/logout", self.logout, methods=["POST"]),
            Route(PREFIX + "/create", p(self.create), methods=["GET", "POST"]),
            Route(PREFIX + "/layers", p(self.layers)),
            Route(PREFIX + "/queues", p(self.queues)),
            Route(PREFIX + "/functions/{name}", p(self.function)),
            Route(PREFIX + "/functions/{name}/configuration", p(self.update_configuration),
                  methods=["POST"]),
            Route(PREFIX + "/functions/{name}/publish", p(self.publish), methods=["POST"]),
            Route(PREFIX + "/functions/{name}/alias", p(self.point_alias), methods=["POST"]),
            Route(PREFIX + "/functions/{name}/delete", p(self.delete), methods=["POST"]),
            Route(PREFIX + "/functions/{name}/invoke", p(self.invoke), methods=["POST"]),
            Route(PREFIX + "/functions/{name}/logs", p(self.log_tail)),
            Mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes)
        app.state.platform = self.platform
        # GetFunction's code location is signed by the API's signer.
        app.state.code_urls = self.code_urls
        return app

    async def redirect_home(self, request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", 307)

    # -- signing in ----------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        target = request.query_params.get("next", PREFIX + "/")
        if not target.startswith(PREFIX):
            target = PREFIX + "/"
        if request.method == "GET":
            return self.render(request, "login.html", next=target, signed_in=False)
        if not self.access.same_origin(request):
            return self.render(request, "denied.html", 403)
        form = await self.form(request)
        cookie = self.access.sign_in(str(form.get("access_key_id", "")),
                                     str(form.get("secret_access_key", "")))
        if cookie is None:
            # The API's own answer to an unknown key or a wrong secret.
            return self.render(request, "login.html", 401, next=target, signed_in=False,
                               error="The security token included in the request is invalid.")
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, cookie, max_age=SESSION_S, httponly=True, samesite="strict",
                            path=PREFIX)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(PREFIX + "/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # -- lists ---------------------------------------------------------------------

    async def functions(self, page: Page) -> Response:
        query = page.request.query_params
        search = query.get("q", "").strip()
        number = max(int(query.get("page", "1")) if query.get("page", "1").isdigit() else 1, 1)
        # Lambda's console filters names in the browser over every function; here the
        # names are filtered on the server and only the page's configurations read.
        names = await asyncio.to_thread(self.platform.functions.function_names)
        if search:
            names = [name for name in names if search.lower() in name.lower()]
        pages = max((len(names) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        number = min(number, pages)
        shown = []
        for name in names[(number - 1) * PAGE_SIZE: number * PAGE_SIZE]:
            try:
                shown.append(await page.api.call("GetFunctionConfiguration", FunctionName=name))
            except ApiError:
                continue  # deleted since the names were read
        now = int(time.time())
        recent = await metrics.recent_totals(self.platform.metric_archive, now - 3600, now + 60)
        return self.render(page.request, "functions.html", functions=shown, search=search,
                           page=number, pages=pages, total=len(names), recent=recent,
                           done=query.get("done"))

    async def layers(self, page: Page) -> Response:
        listing = await page.api.call("ListLayers", MaxItems=50)
        layers = listing["Layers"]
        while listing.get("NextMarker"):
            listing = await page.api.call("ListLayers", Marker=listing["NextMarker"], MaxItems=50)
            layers += listing["Layers"]
        return self.render(page.request, "layers.html", layers=layers)

    async def queues(self, page: Page) -> Response:
        listing = await page.api.call("ListQueues", service="sqs", MaxResults=1000)
        rows = []
        for url in listing.get("QueueUrls") or []:
            attributes = await page.api.call(
                "GetQueueAttributes", service="sqs", QueueUrl=url, AttributeNames=["All"])
            rows.append({"url": url, "name": url.rsplit("/", 1)[1],
                         "attributes": attributes.get("Attributes") or {}})
        return self.render(page.request, "queues.html", queues=rows)

    # -- creating ------------------------------------------------------------------

    async def create(self, page: Page) -> Response:
        # The runtimes this server can run now: from runtime images when its sandbox
        # mounts them, else from the host's interpreters (as environments/ decides).
        settings = self.platform.settings
        on_images = self.platform.environments.images is not None and self.platform.sandbox.mounts_images
        source = settings.runtime_source if on_images else "host"
        runtimes = list(supported_runtimes(settings, source=source))
        role = f"arn:aws:iam::{self.platform.region.account_id}:role/lamina-console"
        form: dict[str, str] = {"runtime": runtimes[0] if runtimes else "python3.11",
                                "role": role, "architecture": "x86_64"}
        error = None
        if page.request.method == "POST":
            data = await self.form(page.request)
            form = {key: str(value) for key, value in data.items() if not isinstance(value, UploadFile)}
            upload = data.get("package")
            try:
                if isinstance(upload, UploadFile) and upload.filename:
                    package, handler = await upload.read(), form.get("handler") or "lambda_function.lambda_handler"
                else:
                    package, handler = blank_package(form.get("runtime", ""))
                    if form.get("handler"):
                        handler = form["handler"]
                created = await page.api.call(
                    "CreateFunction", FunctionName=form.get("name", ""), Runtime=form.get("runtime"),
                    Role=form.get("role") or role, Handler=handler, Code={"ZipFile": package},
                    Architectures=[form.get("architecture") or "x86_64"])
                return RedirectResponse(
                    f"{PREFIX}/functions/{quote(created['FunctionName'])}?done=created", 303)
            except ApiError as failed:
                error = failed
        return self.render(page.request, "create.html", runtimes=runtimes, form=form, error=error,
                           status=error.status_code if error else 200)

    # -- one function ---------------------------------------------------------------

    async def function(self, page: Page, error: ApiError | None = None,
                       result: dict[str, Any] | None = None, status: int = 200,
                       form: dict[str, str] | None = None, tab: str | None = None) -> Response:
        request = page.request
        name = request.path_params["name"]
        tab = tab or request.query_params.get("tab", "code")
        if tab not in TABS:
            tab = "code"
        try:
            function = await page.api.call("GetFunction", FunctionName=name)
        except ApiError as missing:
            return self.render(request, "missing.html", missing.status_code, error=missing, name=name)
        context: dict[str, Any] = {
            "function": function, "config": function["Configuration"], "name": name, "tab": tab,
            "error": error, "result": result, "form": form or {},
            "done": request.query_params.get("done"),
        }
        loader = getattr(self, f"_{tab}_tab")
        context.update(await loader(page, name, function))
        if request.headers.get("hx-request") and tab == "test" and result is not None:
            return self.render(request, "test_result.html", status, **context)
        return self.render(request, "function.html", status, **context)

    async def _code_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        config = function["Configuration"]
        if config.get("PackageType") == "Image":
            return {"files": [], "image": function.get("Code", {}).get("ImageUri")}
        fv = self.platform.functions.get_version(name)
        wanted = page.request.query_params.get("file")
        files, shown = await asyncio.to_thread(self._read_package, fv.code_sha256_hex, wanted)
        return {"files": files, "file": wanted, "content": shown}

    def _read_package(self, digest: str, wanted: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The package's entries, and the text of one of them (read-only)."""
        path = self.platform.blobs.path(digest)
        if not path.exists():
            return [], None
        shown = None
        with zipfile.ZipFile(path) as archive:
            entries = [{"name": info.filename, "size": info.file_size,
                        "depth": info.filename.rstrip("/").count("/"), "dir": info.is_dir()}
                       for info in archive.infolist()]
            if wanted is not None:
                try:
                    info = archive.getinfo(wanted)
                except KeyError:
                    shown = None
                else:
                    if info.file_size > MAX_VIEWED_BYTES:
                        shown = f"({info.file_size:,} bytes: too large to show here)"
                    else:
                        data = archive.read(info)
                        try:
                            shown = data.decode("utf-8")
                        except UnicodeDecodeError:
                            shown = f"(binary file, {info.file_size:,} bytes)"
        # Zip tools often leave directories implied by their files' paths.
        present = {entry["name"] for entry in entries}
        for entry in list(entries):
            parts = str(entry["name"]).rstrip("/").split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth]) + "/"
                if directory not in present:
                    present.add(directory)
                    entries.append({"name": directory, "size": 0, "depth": depth - 1, "dir": True})
        entries.sort(key=lambda entry: str(entry["name"]))
        return entries, shown

    async def _test_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        query = page.request.query_params
        saved = await asyncio.to_thread(self.test_events.names, name)
        event_name = query.get("saved") or ""
        event = None
        if event_name:
            event = await asyncio.to_thread(self.test_events.get, name, event_name)
        elif query.get("template"):
            event = sample_event(query["template"])
            event_name = ""
        return {"saved": saved, "templates": list(SAMPLE_EVENTS), "event_name": event_name,
                "event": event if event is not None else sample_event("hello-world"),
                "template": query.get("template", "")}

    async def _monitor_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        chosen = page.request.query_params.get("range", "1h")
        if chosen not in metrics.RANGES:
            chosen = "1h"
        span, period = metrics.RANGES[chosen]
        end = (int(time.time()) // period + 1) * period
        start = end - span
        series = await metrics.function_series(self.platform.metric_archive, name, start, end,
                                              period)
        drawn = [(s, Markup(charts.line_chart(s, start, end, f"chart-{i}"))) for i, s in enumerate(series)]
        return {"charts": drawn, "range": chosen, "ranges": list(metrics.RANGES)}

    async def _configuration_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        api = page.api
        found: dict[str, Any] = {"in_flight": metrics.in_flight(self.platform.metrics, name)}

        async def optional(key: str, operation: str, **params: Any) -> None:
            try:
                found[key] = await api.call(operation, **params)
            except ApiError:
                found[key] = None

        await optional("url", "GetFunctionUrlConfig", FunctionName=name)
        await optional("async_config", "GetFunctionEventInvokeConfig", FunctionName=name)
        await optional("provisioned", "ListProvisionedConcurrencyConfigs", FunctionName=name)
        await optional("mappings", "ListEventSourceMappings", FunctionName=name)
        await optional("policy", "GetPolicy", FunctionName=name)
        statements = json.loads(found["policy"]["Policy"])["Statement"] if found["policy"] else []
        found["triggers"] = [
            {"principal": (s.get("Principal") or {}).get("Service") or s.get("Principal"),
             "source": ((s.get("Condition") or {}).get("ArnLike") or {}).get("AWS:SourceArn"),
             "sid": s.get("Sid")}
            for s in statements
        ]
        config = function["Configuration"]
        found["environment_text"] = _environment_text((config.get("Environment") or {}).get("Variables") or {})
        return found

    async def _aliases_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        aliases = await page.api.call("ListAliases", FunctionName=name)
        versions = await page.api.call("ListVersionsByFunction", FunctionName=name)
        return {"aliases": aliases["Aliases"], "versions": versions["Versions"]}

    async def _versions_tab(self, page: Page, name: str, function: dict[str, Any]) -> dict[str, Any]:
        versions = await page.api.call("ListVersionsByFunction", FunctionName=name)
        return {"versions": versions["Versions"]}

    # -- changing a function ------------------------------------------------------

    async def update_configuration(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        data = await self.form(page.request)
        form = {key: str(value) for key, value in data.items()}
        changes: dict[str, Any] = {}
        if "memory" in form:
            changes["MemorySize"] = _int_or_text(form["memory"])
        if "timeout" in form:
            changes["Timeout"] = _int_or_text(form["timeout"])
        if "description" in form:
            changes["Description"] = form["description"]
        if "environment" in form:
            changes["Environment"] = {"Variables": _environment_of(form["environment"])}
        try:
            await page.api.call("UpdateFunctionConfiguration", FunctionName=name, **changes)
            if "reserved" in form:
                if form["reserved"].strip():
                    await page.api.call("PutFunctionConcurrency", FunctionName=name,
                                        ReservedConcurrentExecutions=_int_or_text(form["reserved"]))
                else:
                    await page.api.call("DeleteFunctionConcurrency", FunctionName=name)
        except ApiError as failed:
            return await self.function(page, error=failed, status=failed.status_code, form=form,
                                       tab="configuration")
        return RedirectResponse(f"{PREFIX}/functions/{quote(name)}?tab=configuration&done=saved", 303)

    async def publish(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        form = await self.form(page.request)
        try:
            published = await page.api.call("PublishVersion", FunctionName=name,
                                             Description=str(form.get("description", "")) or None)
        except ApiError as failed:
            return await self.function(page, error=failed, status=failed.status_code, tab="versions")
        done = quote(f"published version {published['Version']}")
        return RedirectResponse(f"{PREFIX}/functions/{quote(name)}?tab=versions&done={done}", 303)

    async def point_alias(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        data = await self.form(page.request)
        form = {key: str(value) for key, value in data.items()}
        alias = form.get("alias", "")
        params: dict[str, Any] = {"FunctionName": name, "Name": alias,
                                  "FunctionVersion": form.get("version", "")}
        extra, weight = form.get("extra_version", ""), form.get("weight", "").strip()
        if extra:
            try:
                share = float(weight) / 100
            except ValueError:
                share = weight  # type: ignore[assignment]  # the API names the bad value
            params["RoutingConfig"] = {"AdditionalVersionWeights": {extra: share}}
        else:
            params["RoutingConfig"] = {"AdditionalVersionWeights": {}}
        try:
            existing = {a["Name"] for a in (await page.api.call("ListAliases", FunctionName=name))["Aliases"]}
            operation = "UpdateAlias" if alias in existing else "CreateAlias"
            await page.api.call(operation, **params)
        except ApiError as failed:
            return await self.function(page, error=failed, status=failed.status_code, form=form, tab="aliases")
        return RedirectResponse(f"{PREFIX}/functions/{quote(name)}?tab=aliases&done=alias+saved", 303)

    async def delete(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        try:
            await page.api.call("DeleteFunction", FunctionName=name)
        except ApiError as failed:
            return await self.function(page, error=failed, status=failed.status_code, tab="configuration")
        return RedirectResponse(f"{PREFIX}/?done={quote('deleted ' + name)}", 303)

    # -- testing -------------------------------------------------------------------

    async def invoke(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        data = await self.form(page.request)
        form = {key: str(value) for key, value in data.items()}
        event = form.get("event", "")
        event_name = form.get("event_name", "").strip()
        result: dict[str, Any] | None = None
        error: ApiError | None = None
        try:
            # Events are saved for functions that exist, like the API's resources.
            await page.api.call("GetFunctionConfiguration", FunctionName=name)
        except ApiError as missing:
            return await self.function(page, error=missing, status=missing.status_code, tab="test")
        try:
            json.loads(event or "{}")
        except ValueError as bad:
            return await self.function(page, status=400, form=form, tab="test",
                                       result={"invalid": f"The event is not valid JSON: {bad}"})
        if form.get("action") == "delete":
            deleted = await asyncio.to_thread(self.test_events.delete, name, event_name)
            message = f"Deleted test event {event_name}." if deleted else f"No saved test event {event_name!r}."
            return await self.function(page, form={}, tab="test", result={"notice": message})
        if event_name:
            if not _EVENT_NAME.match(event_name):
                return await self.function(page, status=400, form=form, tab="test", result={
                    "invalid": "Event name: 1 to 25 letters, digits, '.', '-' or '_'."})
            await asyncio.to_thread(self.test_events.put, name, event_name, event)
        if form.get("action") == "save":
            result = {"notice": f"Saved test event {event_name}." if event_name else
                      "Give the event a name to save it."}
        else:
            try:
                output = await page.api.call("Invoke", FunctionName=name, Payload=event.encode(),
                                             LogType="Tail", Qualifier=form.get("qualifier") or None)
            except ApiError as failed:
                error = failed
            else:
                log = ""
                if output.get("LogResult"):
                    try:
                        log = base64.b64decode(output["LogResult"]).decode("utf-8", "replace")
                    except (binascii.Error, ValueError):
                        log = ""
                payload = output.get("Payload") or b""
                text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
                try:
                    text = json.dumps(json.loads(text), indent=2)
                except ValueError:
                    pass
                result = {"status": output.get("StatusCode"), "function_error": output.get("FunctionError"),
                          "payload": text, "log": log, "report": _report(log),
                          "version": output.get("ExecutedVersion")}
        form["saved"] = event_name
        return await self.function(page, error=error, result=result or {}, form=form, tab="test",
                                   status=error.status_code if error else 200)

    async def log_tail(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        try:
            config = await page.api.call("GetFunctionConfiguration", FunctionName=name)
        except ApiError as missing:
            # The message quotes what was asked for (the path): escaped like any text.
            return HTMLResponse(f"<p role='alert'>{html.escape(missing.message)}</p>",
                                missing.status_code)
        group = (config.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{name}"
        since = int((time.time() - LOG_TAIL_S) * 1000)
        events = await asyncio.to_thread(self._tail, group, since)
        return self.render(page.request, "log_tail.html", events=events, name=name)

    def _tail(self, group: str, since_ms: int) -> list[Any]:
        logs = self.platform.logs
        if not logs.has_group(group):
            return []
        return list(logs.events(group, start_ms=since_ms))[-LOG_TAIL_LINES:]
