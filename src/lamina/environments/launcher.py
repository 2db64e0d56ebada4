"""How an environment with external extensions starts: a launcher inside the sandbox.

A sandbox runs one command. With external extensions (executables in
`/opt/extensions`, from layers), that command is this launcher, a bash script
(every runtime image has bash: Debian's is Essential, and it speaks TCP through
`/dev/tcp`):

1. it starts every extension, in the order of their file names;
2. it asks the environment's `LAUNCHER_GATE`, which answers once every extension
   has registered (Lambda's Extension init comes before Runtime init), and then
   starts the runtime;
3. it stays the parent of all of them, reporting each extension that exits
   (`LAUNCHER_EXITED`), and exits with the runtime's own status when the runtime
   ends, so a runtime exit reads exactly as without extensions;
4. when SHUTDOWN begins (`LAUNCHER_STOPPING` answers) it sends the runtime SIGTERM,
   Lambda's graceful shutdown, and stays until the extensions are done too.

Without external extensions the runtime is started directly, at no cost.
`AWS_LAMBDA_EXEC_WRAPPER` (Lambda's wrapper scripts for managed runtimes) is a
prefix to the runtime's command line, like on Lambda.
"""

from __future__ import annotations

from pathlib import Path

from lamina.environments.extensions import RUNTIME_NAME
from lamina.environments.extensions_api import (
    LAUNCHER_EXITED,
    LAUNCHER_GATE,
    LAUNCHER_STOPPING,
)

EXTENSIONS_DIR = "/opt/extensions"

_SCRIPT = r"""
count=$1; shift
# The extensions' output has a pipe of its own (output.py); the runtime does not get it.
out=${_LAMINA_EXTENSIONS_LOG_FD:-1}
unset _LAMINA_EXTENSIONS_LOG_FD
declare -A names
for ((i = 0; i < count; i++)); do
    "$1" >&"$out" 2>&1 &
    names[$!]=${1##*/}
    shift
done
call() {  # a free descriptor, never one the runtime inherits (its log fd)
    exec {api}<>"/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API##*:}" || return 1
    printf '%s %s HTTP/1.1\r\nHost: sandbox\r\nContent-Length: 0\r\n\r\n' "$1" "$2" >&"$api"
    read -r _ <&"$api"
    exec {api}<&-
}
# The gate is asked in the background: an extension may exit while it waits.
call GET GATE &
gate=$!
# Answered when SHUTDOWN begins: the runtime gets SIGTERM, as on Lambda.
call GET STOPPING &
stopping_watch=$!
runtime=
stopping=
while :; do
    wait -n -p done_pid
    status=$?
    if [ -z "$done_pid" ]; then
        exit "$status"
    elif [ "$done_pid" = "$runtime" ]; then
        # Once SHUTDOWN has begun, the extensions still have their time.
        [ -n "$stopping" ] || exit "$status"
        runtime=
        call POST "EXITED/$RUNTIME_NAME/$status"
    elif [ "$done_pid" = "$gate" ]; then
        [ "$status" = 0 ] || exit 1
        if [ "$out" = 1 ]; then "$@" & else "$@" {out}>&- & fi
        runtime=$!
    elif [ "$done_pid" = "$stopping_watch" ]; then
        stopping=1
        if [ -n "$runtime" ]; then kill -TERM "$runtime" 2>/dev/null; fi
    else
        call POST "EXITED/${names[$done_pid]}/$status"
    fi
done
""".replace("GATE", LAUNCHER_GATE).replace("EXITED", LAUNCHER_EXITED).replace(
    "STOPPING", LAUNCHER_STOPPING).replace("$RUNTIME_NAME", RUNTIME_NAME)


def external_extensions(layers_root: Path | None) -> list[str]:
    """The file names of the executables in /opt/extensions, sorted."""
    if layers_root is None:
        return []
    directory = layers_root / "extensions"
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    # Executable by anyone: the sandbox's user is not the files' owner.
    return [entry.name for entry in entries
            if entry.is_file() and entry.stat().st_mode & 0o111]


def runtime_argv(argv: list[str], exec_wrapper: str | None, extensions: list[str]) -> list[str]:
    """The sandbox's command: the runtime's, behind the wrapper and the launcher."""
    if exec_wrapper:
        argv = [exec_wrapper, *argv]
    if not extensions:
        return argv
    paths = [f"{EXTENSIONS_DIR}/{name}" for name in extensions]
    return ["/bin/bash", "-c", _SCRIPT, "lamina-launcher", str(len(paths)), *paths, *argv]
