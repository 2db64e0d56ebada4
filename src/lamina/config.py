"""The one place Lamina's settings come from.

Every setting has a default so `lamina serve` works with no configuration; each can
be overridden by a `LAMINA_<NAME>` environment variable (upper-case field name).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lamina.limits import Limits

# Memory kept for the host (the server, the OS, page cache) when Lamina sizes the
# memory it hands out to execution environments: the larger of these two.
HOST_RESERVE_FRACTION = 0.2
HOST_RESERVE_MB = 2048


def default_environment_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Most of the machine's RAM: MemTotal minus max(20 %, 2 GB), at least 128 MB."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total_mb = int(line.split()[1]) // 1024
                break
        else:
            return 4096
    except (OSError, ValueError, IndexError):
        # Not Linux, or no /proc: a modest default the user can raise.
        return 4096
    reserve = max(int(total_mb * HOST_RESERVE_FRACTION), HOST_RESERVE_MB)
    return max(total_mb - reserve, 128)


def default_image_cache_dir() -> Path:
    """Where runtime images are kept: one cache for every server and data dir.

    As root, /var/cache/lamina/images: sandboxes run as unprivileged host users, who
    must be able to reach an image's files, and /root is closed to them. Otherwise
    $XDG_CACHE_HOME/lamina/images."""
    if os.geteuid() == 0:
        return Path("/var/cache/lamina/images")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina" / "images"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9000
    data_dir: Path = Path("data")
    region: str = "us-east-1"
    account_id: str = "000000000000"
    # "AKID:SECRET,AKID2:SECRET2". Empty means: accept any credentials, which is
    # only allowed on a loopback bind (see api.auth). A key may name the account it
    # belongs to, "AKID:SECRET:111122223333": callers from accounts other than
    # account_id reach functions only through their resource-based policies.
    access_keys: str = ""
    # Database URL; empty means SQLite in data_dir.
    database_url: str = ""
    log_level: str = "info"
    # Sandbox backend: "namespaces", "process", or empty for the best this host allows.
    sandbox: str = ""
    # CIDRs functions may reach although they are private, link-local or the host's
    # own ("10.1.0.0/16,192.168.5.7/32"); by default only the internet, as on Lambda.
    egress_allow: str = ""
    # The first of the 65,536 unprivileged host uids sandboxes run as.
    sandbox_first_uid: int = 1_000_000
    # INIT runs unthrottled; the CPU share in proportion to memory applies after it.
    init_cpu_boost: bool = True
    # How long a new or updated function stays Pending / LastUpdateStatus InProgress
    # before it turns Active / Successful (when its runtime is ready). Lambda takes
    # seconds; 0 settles right after the answer is sent, still asynchronously.
    function_settle_delay_s: float = 0.0
    # Idle execution environments are stopped after this long (Lambda: minutes).
    environment_idle_s: float = 600.0
    # The memory (MB) Lamina may hand out to execution environments: the sum of the
    # MemorySize of every live environment (busy, idle, starting, provisioned) stays
    # within it. A cold start that would exceed it first stops idle environments of
    # other functions (least recently used first), else it is throttled (429): the
    # host never swaps. Default: MemTotal minus max(20 %, 2 GB).
    environment_memory_mb: int = field(default_factory=default_environment_memory_mb)
    # The disk (MB) unpacked code may take in data_dir/unpacked. Zips are small (the
    # code-size quota counts them), but one unpacks to up to 250 MB: past this
    # budget the trees of functions not invoked recently are removed (a cold start
    # unpacks them again); trees in use by running environments always stay.
    unpacked_code_mb: int = 10_240
    # Asynchronous invocation. Every delay of the retry schedule (1 and 2 minutes
    # after a function error, 1 s to 5 min of back-off after a throttle) and the
    # maximum event age are multiplied by this: 0.01 runs the whole schedule in
    # miniature (tests), ages included, so relative timing stays AWS's.
    async_retry_delay_scale: float = 1.0
    # Workers draining one function's events at once (at most its reserved
    # concurrency, when it has one).
    async_workers_per_function: int = 10
    # How long a claim on an event holds without being renewed; after a crash the
    # events the dead server held are claimed again this long after it died.
    async_lease_s: float = 30.0
    # Schedules (EventBridge rules, EventBridge Scheduler) run on a clock this many
    # times slower than the wall clock's: 0.02 makes a minute of schedule time 1.2 s
    # (tests), from the start of the current UTC day, so rate() and cron() keep
    # AWS's relative timing in miniature.
    schedule_time_scale: float = 1.0
    # RabbitMQ brokers event source mappings may read, "name=amqp://host:port,...";
    # a mapping names one by an Amazon MQ broker ARN ending in broker:<name>[:id].
    mq_brokers: str = ""
    # A JSON file of secrets ({"name": {"username": ..., "password": ...}}) that
    # SourceAccessConfigurations BASIC_AUTH entries name by ARN or name.
    secrets_file: Path = Path("")
    # What runs a function: "image" (the runtime's root file system image, mounted
    # read-only as /, like Lambda) or "host" (the host's own interpreters).
    runtime_source: str = "image"
    # Run functions whose runtime AWS no longer accepts for new functions (python3.8,
    # nodejs18.x, provided, ...) instead of refusing them as AWS does.
    allow_deprecated_runtimes: bool = False
    # Where runtime images are kept (shared by every server of this user).
    image_cache_dir: Path = field(default_factory=default_image_cache_dir)
    # A registry to pull runtime images from first, e.g. "registry.internal:5000/lambda":
    # <registry>/python:3.13, <registry>/nodejs:24, <registry>/provided:al2023. Images
    # are built from Debian's packages when it is empty or a pull fails.
    runtime_image_registry: str = ""
    # Registries (host[:port], comma-separated) reached without TLS verification;
    # loopback registries always are.
    insecure_image_registries: str = ""
    # Registry credentials for container images: a Docker-style auth file
    # (~/.docker/config.json's format). Empty: $REGISTRY_AUTH_FILE, then skopeo's
    # usual places, ~/.docker/config.json among them.
    registry_auth_file: str = ""
    # The Debian mirror images are built from; empty means mmdebstrap's default.
    debian_mirror: str = ""
    # Connections. A client has this long to send a request's headers, and then
    # this long to send its body, or it is answered 408 and disconnected; an idle
    # keep-alive connection is closed after keep_alive_s.
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_request_header_bytes: int = 64 * 1024
    # Open connections at most (beyond it new requests get 503), and requests
    # whose signature is not verified yet, i.e. still sending their body (beyond it
    # 429), so unauthenticated clients cannot hold the server's memory or sockets.
    max_connections: int = 2_000
    max_unverified_requests: int = 256
    # What an invocation costs (observe/metrics.py): AWS's public Lambda prices in
    # USD (us-east-1, the first pricing tier), per GB-second by architecture and per
    # request. Set your own for internal charge-back.
    price_gb_second_x86_64: float = 0.0000166667
    price_gb_second_arm64: float = 0.0000133334
    price_per_request: float = 0.0000002
    # CloudWatch metrics (AWS/Lambda) in the store: written every metrics_flush_s;
    # one-minute data kept metrics_minute_retention_s, then down-sampled to one
    # hour and kept until metrics_retention_s (CloudWatch: 15 days, 455 days).
    metrics_flush_s: float = 10.0
    metrics_minute_retention_s: float = 15 * 86400.0
    metrics_retention_s: float = 455 * 86400.0
    # Tracing (observe/tracing.py): how Lambda samples an invocation that arrives
    # without a sampling decision when its TracingConfig is Active. X-Ray's default
    # rule: the first `trace_reservoir_per_s` requests each second, then this fraction
    # of the rest. Spans are exported when OTEL_EXPORTER_OTLP_ENDPOINT names a collector.
    trace_reservoir_per_s: int = 1
    trace_sampling_rate: float = 0.05
    # The master key (base64 of 32 random bytes) that KMS key material is encrypted
    # under. Empty: Lamina makes one on first start, in data_dir/kms-master.key
    # (mode 0600); keep that file as safe as the database, which is useless without it.
    kms_master_key: str = ""
    # Where EFS file systems live, one directory each (e.g. an NFS mount shared by
    # several servers). Empty: data_dir/file-systems.
    file_systems_dir: Path = Path("")
    # Off: invocations are not counted at all (no /metrics figures, no CloudWatch
    # data, no cost); concurrency limits still apply. For measuring what metrics cost.
    metrics_enabled: bool = True
    # Cluster mode (lamina.cluster): execution environments run on the nodes of a Ray
    # cluster instead of this host. "ray://HEAD:10001" (Ray Client) or "HEAD:6379"
    # (this host is itself a node of the cluster); empty: the local pool. Needs a
    # database_url (PostgreSQL) shared by every front end.
    cluster: str = ""
    # The Ray namespace Lamina's actors (node agents, the concurrency ledger) live in.
    cluster_namespace: str = "lamina"
    # Only nodes that advertise this custom resource (`ray start --resources
    # '{"lamina_node": 1}'`) run environments; the head need not.
    cluster_node_resource: str = "lamina_node"
    # Where a node agent keeps its code cache, unpacked code and scratch space
    # (one directory per node under it, on the node's own disk).
    cluster_node_dir: Path = Path("/var/tmp/lamina-node")
    # The memory (MB) each node's environments may take; 0: the node's own default
    # (MemTotal minus max(20 %, 2 GB)).
    cluster_node_memory_mb: int = 0
    # The URL node agents reach this front end at for code (GET /_lamina/code/...).
    # Empty: http://HOST:PORT as bound.
    cluster_advertise_url: str = ""
    limits: Limits = field(default_factory=Limits)

    @property
    def credentials(self) -> dict[str, str]:
        return {key: secret for key, (secret, _account) in self._keys().items()}

    @property
    def key_accounts(self) -> dict[str, str]:
        """The account each access key belongs to (this server's own by default)."""
        return {key: account or self.account_id for key, (_secret, account) in self._keys().items()}

    def _keys(self) -> dict[str, tuple[str, str | None]]:
        keys: dict[str, tuple[str, str | None]] = {}
        for item in self.access_keys.split(","):
            if ":" not in item:
                continue
            key, _, rest = item.partition(":")
            secret, account = rest, None
            # A trailing ":<12 digits>" names the key's account; secrets themselves
            # are never 12 digits after a colon in practice (AWS's are 40 characters).
            head, sep, tail = rest.rpartition(":")
            if sep and re.fullmatch(r"\d{12}", tail.strip()):
                secret, account = head, tail.strip()
            keys[key.strip()] = (secret.strip(), account)
        return keys

    @property
    def brokers(self) -> dict[str, str]:
        """mq_brokers as {name: URL}."""
        found = {}
        for item in self.mq_brokers.split(","):
            name, sep, url = item.partition("=")
            if sep and name.strip():
                found[name.strip()] = url.strip()
        return found

    @property
    def file_systems_root(self) -> Path:
        return self.file_systems_dir if str(self.file_systems_dir) not in ("", ".") \
            else self.data_dir / "file-systems"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'lamina.db'}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, Path):
        return Path(value)
    return value


def _from_env(cls: type, env: Mapping[str, str], prefix: str) -> Any:
    values: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            values[f.name] = _from_env(type(default), env, prefix)
            continue
        raw = env.get(prefix + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(raw, default)
    return cls(**values)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `LAMINA_*` variables, then explicit overrides (CLI flags)."""
    settings: Settings = _from_env(Settings, os.environ if env is None else env, "LAMINA_")
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})
