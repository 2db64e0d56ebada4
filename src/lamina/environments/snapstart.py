"""SnapStart: the template of each published SnapStart version, and restores from it.

On Lambda, publishing a version with `SnapStart.ApplyOn = PublishedVersions` runs
INIT once, snapshots the initialized environment, and starts every later
environment of the version from that snapshot. Here the "snapshot" is the
initialized runtime itself, kept alive in a template sandbox as a zygote
(sandbox/zygote.py: CRIU does not work on this kernel, fork does), and a cold start
of the version is a fork of it into namespaces, a cgroup and a Runtime API of its
own. Everything above the sandbox is the same ExecutionEnvironment as for any cold
start, with `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, fresh credentials, log
stream and request ids, and a REPORT carrying Restore Duration instead of Init
Duration.

The template's INIT follows Lambda's SnapStart rules: it may take up to 15 minutes
(the larger of 130 seconds and the function's timeout); if it fails or times out the
version is Failed with StateReasonCode `FunctionError.RuntimeInitError` or
`FunctionError.InitTimeout`. What cannot be snapshotted (a runtime other than
Python's, a container image, external extensions, a sandbox without namespaces)
leaves the version Active with a StateReason saying so, and it starts cold.

A template lives as long as its version (and this server): a server that starts
again makes a version's template anew at its first cold start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lamina.environments.environment import ExecutionEnvironment
from lamina.environments.launcher import external_extensions
from lamina.environments.spec import EnvironmentSpec
from lamina.environments.states import State
from lamina.errors import LambdaError, SnapStartException, SnapStartTimeoutException
from lamina.sandbox.zygote import RestoringBackend, ZygoteTemplate, supports_templates

if TYPE_CHECKING:
    from lamina.environments.pool import EnvironmentPool, VersionKey

log = logging.getLogger("lamina.environments")

# Lambda's limit on a SnapStart version's INIT: 130 s, or the function's timeout if longer.
SNAPSHOT_INIT_TIMEOUT_S = 130
# And on a restore: loading the runtime and running the after-restore hooks.
RESTORE_TIMEOUT_S = 10.0
INITIALIZATION_TYPE = "snap-start"
# (State, StateReasonCode, StateReason) for the control plane; None: Active with SnapStart.
Outcome = tuple[str, str, str] | None


@dataclass
class Template:
    environment: ExecutionEnvironment
    zygote: ZygoteTemplate

    @property
    def alive(self) -> bool:
        return self.environment.state is State.READY

    async def stop(self) -> None:
        await self.zygote.destroy()
        await self.environment.shutdown()


class SnapStartTemplates:
    def __init__(self, pool: EnvironmentPool) -> None:
        self._pool = pool
        self._templates: dict[VersionKey, Template] = {}
        self._making: dict[VersionKey, asyncio.Task[Outcome]] = {}

    @property
    def environments(self) -> list[ExecutionEnvironment]:
        """The templates' own environments (they hold code mounted, like any)."""
        return [template.environment for template in self._templates.values()]

    def unsupported(self, fv: EnvironmentSpec, layers_root: object = None) -> str | None:
        """Why fv cannot be snapshotted here, as its StateReason; None when it can."""
        if not supports_templates(self._pool.backend):
            return ("SnapStart needs the namespaces sandbox with its seccomp filter, which this "
                    "server does not run; the version starts without a snapshot.")
        if fv.image_uri is not None:
            return ("SnapStart is not supported for container images; the version starts "
                    "without a snapshot.")
        if not fv.runtime.startswith("python3."):
            return (f"{fv.runtime} is not supported for SnapStart enabled functions: Lamina "
                    "snapshots Python runtimes only; the version starts without a snapshot.")
        if layers_root is not None and external_extensions(layers_root):  # type: ignore[arg-type]
            return ("SnapStart with external extensions is not supported by Lamina; the version "
                    "starts without a snapshot.")
        return None

    async def make(self, fv: EnvironmentSpec) -> Outcome:
        """Run fv's INIT once in a template (at most one at a time per version)."""
        key = (fv.function_name, fv.version, fv.revision_id)
        template = self._templates.get(key)
        if template is not None and template.alive:
            return None
        task = self._making.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._make(fv, key))
            self._making[key] = task
            task.add_done_callback(lambda _: self._making.pop(key, None))
        return await asyncio.shield(task)

    async def _make(self, fv: EnvironmentSpec, key: VersionKey) -> Outcome:
        reason = self.unsupported(fv)
        if reason is not None:
            return ("Active", "InvalidRuntime", reason)
        config = await self._pool.environment_config(fv, INITIALIZATION_TYPE)
        reason = self.unsupported(fv, config.layers_root)
        if reason is not None:
            return ("Active", "InvalidRuntime", reason)
        config = dataclasses.replace(
            config, init_timeout_s=float(max(SNAPSHOT_INIT_TIMEOUT_S, fv.timeout)))
        zygote = ZygoteTemplate(self._pool.backend)  # type: ignore[arg-type]
        environment = ExecutionEnvironment(config, zygote, self._pool.logs)
        await environment.start()
        if environment.init_failure is not None or environment.state is not State.READY:
            failure = environment.init_failure or b"{}"
            await zygote.destroy()
            await environment.shutdown()
            return ("Failed", *_failure_reason(failure))
        zygote.keep_spares()
        old = self._templates.pop(key, None)
        self._templates[key] = Template(environment, zygote)
        if old is not None:
            await old.stop()
        return None

    async def backend_for(self, fv: EnvironmentSpec) -> RestoringBackend | None:
        """How to start an environment of fv from its template (made first if this
        server has none yet); None when fv cold-starts as usual."""
        if not fv.snap_start:
            return None
        key = (fv.function_name, fv.version, fv.revision_id)
        template = self._templates.get(key)
        if template is None or not template.alive:
            if await self.make(fv) is not None:
                return None
            template = self._templates.get(key)
            if template is None:
                return None
        return RestoringBackend(template.zygote)

    async def retire(self, function_name: str, version: str | None = None) -> None:
        """Stop the templates of a deleted version (None: of every version)."""
        for key in [k for k in self._templates
                    if k[0] == function_name and (version is None or k[1] == version)]:
            await self._templates.pop(key).stop()

    async def stop(self) -> None:
        templates, self._templates = list(self._templates.values()), {}
        await asyncio.gather(*(t.stop() for t in templates), return_exceptions=True)


def restore_error(failure: bytes) -> LambdaError:
    """What Invoke answers when a restored environment failed before its first event
    (Lambda discards it; the log stream has the hook's traceback)."""
    error_type, message = _error_of(failure)
    if error_type == "Sandbox.Timedout":
        return SnapStartTimeoutException(
            f"Lambda couldn't restore the snapshot within the timeout limit "
            f"({RESTORE_TIMEOUT_S:g} seconds).")
    detail = f"{error_type}: {message}" if message else error_type
    if error_type == "Runtime.AfterRestoreError":
        return SnapStartException(
            f"The after-restore runtime hook encountered an error ({detail}). For more "
            f"information, check the function's log stream.")
    return SnapStartException(
        f"The environment restored from the snapshot failed before its first event "
        f"({detail}). For more information, check the function's log stream.")


def _error_of(failure: bytes) -> tuple[str, str]:
    try:
        error = json.loads(failure)
        return str(error.get("errorType") or "Runtime.Unknown"), str(error.get("errorMessage") or "")
    except (ValueError, AttributeError):
        return "Runtime.Unknown", ""


def _failure_reason(failure: bytes) -> tuple[str, str]:
    """StateReasonCode and StateReason of a version whose snapshot INIT failed."""
    error_type, message = _error_of(failure)
    code = "FunctionError.InitTimeout" if error_type == "Sandbox.Timedout" \
        else "FunctionError.RuntimeInitError"
    detail = f"{error_type}: {message}" if message else error_type
    return code, f"Function error during the SnapStart INIT phase: {detail}"
