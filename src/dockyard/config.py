"""Settings from DOCKYARD_* environment variables and $DOCKYARD_HOME/config.toml.

The environment wins over the file. Example config.toml:

    port = 8000
    simulated_gpus = "A100-80GB:4,RTX-4090:2"

    [[nodes]]
    name = "gpu2"
    url = "tcp://10.0.0.2:2376"
    tls_ca = "/etc/dockyard/ca.pem"
    tls_cert = "/etc/dockyard/cert.pem"
    tls_key = "/etc/dockyard/key.pem"
    cpus_per_gpu = 8
    memory_per_gpu_gb = 64
    gpu_sharing = "mps:4"          # docs/gpu-sharing.md: time-slicing:N, mps:N or mig
    placement_policy = "best-fit"
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from dockyard.core.autostop import MAX_MINUTES
from dockyard.core.errors import InvalidInput
from dockyard.core.sharing import parse_sharing
from dockyard.core.validation import NAME_PATTERN

LOCAL_NODE = "local"
# How GPUs are chosen among the nodes of a pool (the nodes that name the same policy): the
# policies of core/policies/, the code `dockyard admin simulate` runs (docs/placement.md).
PlacementPolicy = Literal["first-fit", "best-fit", "fgd", "dockyard"]
# The backend a node is: a Docker engine, or one in memory (runtimes/fake.py) for demos
# and UI work with no Docker at all.
RuntimeKind = Literal["docker", "fake"]


def _check_sharing(value: str | None) -> str | None:
    try:
        spec = parse_sharing(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return spec.text if spec else None


def default_home() -> Path:
    return Path(os.environ.get("DOCKYARD_HOME") or Path.home() / ".local/share/dockyard")


class NodeConfig(BaseModel):
    """One Docker engine that holds GPUs."""

    name: str = Field(pattern=NAME_PATTERN)
    runtime: RuntimeKind = "docker"
    url: str = "unix:///var/run/docker.sock"
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Declared GPUs for hosts without NVIDIA GPUs ("A100-80GB:4@550.54.15").
    simulated_gpus: str | None = None
    # The address users reach this node's SSH ports at (default: the host of `url`, or
    # the server's public_host for a local socket).
    public_host: str | None = None
    # Shares of the host given to each GPU; default: the host's divided by its GPUs.
    cpus_per_gpu: float | None = Field(default=None, gt=0)
    memory_per_gpu_gb: float | None = Field(default=None, gt=0)
    # Data disks and volumes hold at most their size (loop-mounted ext4 images on the
    # server's host, docs/volumes.md); false: plain Docker volumes, sizes not enforced.
    sized_disks: bool = True
    # Shares of its GPUs for rent (core/sharing.py, docs/gpu-sharing.md); None: whole GPUs.
    gpu_sharing: str | None = None
    # None: the server's placement_policy.
    placement_policy: PlacementPolicy | None = None

    _sharing = field_validator("gpu_sharing")(_check_sharing)

    def ssh_host(self) -> str:
        """Where users connect to this node's published SSH ports."""
        if self.public_host:
            return self.public_host
        if self.url.startswith(("tcp://", "ssh://")):
            return urlparse(self.url).hostname or "127.0.0.1"
        return "127.0.0.1"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError("node url must start with unix://, tcp:// or ssh://")
        return value

    @model_validator(mode="after")
    def _tcp_needs_tls(self) -> "NodeConfig":
        # An engine's API is root on its host: over plain TCP, for anyone on the network.
        if self.url.startswith("tcp://") and not (self.tls_ca and self.tls_cert and self.tls_key):
            raise ValueError(f"node {self.name}: a tcp:// engine needs tls_ca, tls_cert and tls_key "
                             "(verified TLS); use ssh:// or a unix socket otherwise")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCKYARD_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    # The local engine is node `local` unless `nodes` says otherwise.
    docker_url: str = "unix:///var/run/docker.sock"
    runtime: RuntimeKind = "docker"  # the local node's backend (DOCKYARD_RUNTIME)
    simulated_gpus: str | None = None
    cpus_per_gpu: float | None = Field(default=None, gt=0)
    memory_per_gpu_gb: float | None = Field(default=None, gt=0)
    gpu_sharing: str | None = None  # of the local node
    placement_policy: PlacementPolicy = "dockyard"
    nodes: list[NodeConfig] = Field(default_factory=list)
    sized_disks: bool = True  # for the local node; see NodeConfig
    # Any small image with a shell on the nodes: runs nvidia-smi on remote ones, and
    # finds which resource limits each engine may give containers.
    gpu_probe_image: str = "dockyard/debian:bookworm"
    # A static busybox (Debian's busybox-static): the platform's own tools in instances.
    tools_busybox: Path = Path("/bin/busybox")
    # Commands run in instances: the user's `exec` (its output streamed, cut at the cap)
    # and the platform's own (connection reads, disk use, the self-test).
    exec_timeout_s: float = Field(default=600, gt=0, le=86400)
    exec_max_output_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    logs_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # The image's self-test imports the framework: tens of seconds on a busy host.
    check_timeout_s: float = Field(default=180, gt=0)

    # What placement may promise of a node's CPUs and memory to instances with GPUs, as a
    # multiple of what it has (OpenStack's allocation ratios): CPU quotas are ceilings, so
    # over-committing CPUs only slows instances down; memory past the host's is the OOM killer.
    cpu_allocation_ratio: float = Field(default=1.0, gt=0)
    memory_allocation_ratio: float = Field(default=1.0, gt=0)
    # A GPU-less instance (and no-GPU mode) gets this small share.
    no_gpu_cpus: float = Field(default=0.5, gt=0)
    no_gpu_memory_gb: float = Field(default=2.0, gt=0)
    shm_size_gb: float = Field(default=8.0, gt=0)
    pids_limit: int = Field(default=8192, gt=0)
    # What an instance may write to its system disk (its container's own layer), so that
    # one tenant cannot fill the node's disk: enforced by the engine where its storage
    # allows a size (overlay2 on XFS with pquota), else measured and the instance stopped
    # (docs/volumes.md). 0: no limit.
    system_disk_gb: int = Field(default=50, ge=0)
    stop_timeout_s: int = Field(default=10, ge=0)
    # A system disk saved at each GPU change grows a layer each time; overlay2 allows 128.
    max_sysdisk_layers: int = Field(default=100, ge=1, le=120)

    # Instances cannot reach this host's own addresses (the API, the engine, the database)
    # nor link-local metadata services; except these TCP ports of the host (a mirror).
    protect_host: bool = True
    instance_host_open_ports: list[int] = Field(default_factory=list)
    # dockyard-shutdown (docs/autostop.md): instances post their stop to this listener, the
    # one port of this host the firewall opens to them (0: none, no dockyard-shutdown). They
    # reach it at their default gateway, this host on their bridge; on other nodes' hosts
    # that is not this server, so set inside_url (http://server:8001) for them.
    inside_host: str = "0.0.0.0"
    inside_port: int = Field(default=8001, ge=0, le=65535)
    inside_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")

    # Each user's private bridge network on a node is a subnet of this pool.
    network_pool: str = "10.213.0.0/16"
    network_prefix: int = Field(default=24, ge=8, le=29)

    # SSH into instances: each gets a port of this range on its node, bound to ssh_bind.
    public_host: str = "127.0.0.1"
    ssh_bind: str = "0.0.0.0"
    ssh_port_min: int = Field(default=20000, ge=1, le=65535)
    ssh_port_max: int = Field(default=29999, ge=1, le=65535)

    # The image catalog, and a CA bundle that image builds trust (TLS-intercepting proxies).
    catalog_path: Path | None = None
    build_ca_bundle: Path | None = None
    # Quota on the images each user saves from their instances.
    max_saved_images: int = Field(default=10, ge=0)
    max_saved_images_gb: float = Field(default=100.0, ge=0)

    # Billing (docs/billing.md). Amounts are decimal strings in the currency.
    currency: str = "CNY"
    billing_enabled: bool = True
    min_balance_minutes: float = Field(default=10, ge=0)
    low_balance_threshold: str = "10"
    credit_limit: str = "0"
    free_data_disk_gb: int = Field(default=50, ge=0)
    settle_interval_s: float = Field(default=30.0, gt=0, le=60)
    settle_lag_s: float = Field(default=2.0, ge=0)
    storage_period_s: int = Field(default=86400, gt=0)
    settle_chunk: int = Field(default=2000, gt=0)
    billing_crash_after_chunks: int | None = None  # fault injection for tests: SIGKILL itself

    # Clusters (docs/distributed.md): at most this many members; each cluster's
    # private network is a subnet of this pool; overlay (cross-engine) traffic encrypted
    # with IPsec unless cluster_network_encrypted is turned off (faster, for trusted links).
    max_cluster_nodes: int = Field(default=16, ge=1, le=100)
    cluster_network_pool: str = "10.214.0.0/16"
    cluster_network_encrypted: bool = True

    reconcile_interval_s: float = Field(default=5.0, gt=0)
    # A node that has not answered for node_grace_s is offline: its running instances are
    # lost (billing stops when it was last seen) until it answers again.
    node_grace_s: float = Field(default=60.0, gt=0)
    node_ping_timeout_s: float = Field(default=5.0, gt=0)
    # How long an instance may stay in each transitional status (docs/lifecycle.md); a
    # create includes pulling or building its image.
    creating_timeout_s: float = Field(default=3600.0, gt=0)
    starting_timeout_s: float = Field(default=900.0, gt=0)
    stopping_timeout_s: float = Field(default=300.0, gt=0)
    releasing_timeout_s: float = Field(default=900.0, gt=0)
    # A migration (docs/migrate.md): its deadline as a whole (past it the instance stays on
    # its node, stopped), and the longest a read or write of its copies may wait on an engine.
    migrating_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    migration_io_timeout_s: float = Field(default=60.0, gt=0)
    activity_interval_s: float = Field(default=60.0, gt=0)
    # Monitoring: a sample of every running instance this often, kept this long
    # (in memory), and its data disk's use measured this often (du walks the files).
    metrics_interval_s: float = Field(default=15.0, gt=0)
    metrics_window_s: float = Field(default=3600.0, gt=0)
    metrics_disk_interval_s: float = Field(default=300.0, gt=0)
    # Where the engine cannot hold system disks to their size: when a node's container
    # storage loses this much free space between two samples, its system disks are
    # measured at once rather than at their turn (a fast writer is caught in seconds).
    disk_pressure_drop_gb: float = Field(default=5.0, gt=0)
    # Auto-stop: how often running instances are checked against their policy,
    # and the length of one policy minute in seconds: 60, shortened only by tests.
    autostop_interval_s: float = Field(default=60.0, gt=0)
    autostop_minute_s: float = Field(default=60.0, gt=0)
    # The length of one minute of a queue timeout in seconds: 60, shortened only by tests.
    queue_minute_s: float = Field(default=60.0, gt=0)
    # Volumes (docs/volumes.md): a stopped instance is released after this many days
    # (its data disk kept as a volume), with notices 3 days and 1 day before; how often
    # that is checked, and the length of one day in seconds: 86400, shortened by tests.
    auto_release_days: int = Field(default=15, ge=1, le=3650)
    autorelease_interval_s: float = Field(default=300.0, gt=0)
    autorelease_day_s: float = Field(default=86400.0, gt=0)
    max_volume_gb: int = Field(default=65536, ge=1)
    # Operator policy (docs/autostop.md): how long before a timer's stop its warning comes;
    # the timers a create gets when its user names none; and limits no user can exceed or
    # turn off (an idle stop of at most 2 h: autostop_idle_limit_minutes=120). Minutes.
    autostop_warn_minutes: int = Field(default=10, ge=0, le=MAX_MINUTES)
    autostop_default_idle_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    autostop_default_max_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    autostop_default_gpu_idle_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    autostop_idle_limit_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    autostop_max_limit_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    autostop_gpu_idle_limit_minutes: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    max_body_bytes: int = 256 * 1024

    # Everything that comes out of an instance (JupyterLab, ports, share links) is served on
    # a host of its own, made from this template ({id}: the instance's id), so that it never
    # shares an origin or a cookie with the console (docs/access.md). Browsers resolve
    # *.localhost to this machine; for other machines set e.g. "{id}.inst.example.org" with a
    # wildcard DNS record and certificate. A ":port" in it is used in links as it is;
    # without one, links keep the port the console was reached on.
    instance_domain: str = "{id}.localhost"
    # The front door's limits on what a client may hold (docs/security.md).
    max_connections_per_ip: int = Field(default=64, ge=1)
    request_head_bytes: int = Field(default=64 * 1024, ge=1024)
    request_head_timeout_s: float = Field(default=20.0, gt=0)
    workers: int = Field(default=16, gt=0)
    api_threads: int = Field(default=200, gt=0)

    # Security (docs/security.md). Addresses (or CIDR blocks) of proxies in front of the
    # server whose X-Forwarded-For is believed; nobody else's is.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Failed sign-ins allowed per account and per client address in a sliding window,
    # shared by the API and the console; password hashes (argon2) computed at once.
    login_failures_per_account: int = Field(default=10, ge=1)
    login_failures_per_address: int = Field(default=50, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    login_concurrent_hashes: int = Field(default=4, ge=1)
    # API tokens from `dockyard login` stop working after this many days; share links too.
    token_lifetime_days: int = Field(default=30, ge=1, le=3650)
    share_link_days: int = Field(default=7, ge=1, le=365)
    # Per-user caps on requests that hold a worker for long: waits (--wait, long-polls),
    # log follows and execs. One user's many cannot take every worker.
    max_waits_per_user: int = Field(default=10, ge=1)
    max_log_follows_per_user: int = Field(default=5, ge=1)
    max_execs_per_user: int = Field(default=5, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # a ValueError names the bad one
        return value

    @field_validator("instance_domain")
    @classmethod
    def _one_id_in_the_first_label(cls, value: str) -> str:
        value = value.strip().lower()
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
        labels = host.split(".")
        if value.count("{id}") != 1 or "{id}" not in labels[0] or len(labels) < 2 or not all(
                re.fullmatch(r"[a-z0-9-]+", label.replace("{id}", "x")) for label in labels):
            raise ValueError("instance_domain must be a host name with {id} in its first label, "
                             "like {id}.inst.example.org")
        if ":" in value and not re.fullmatch(r"[0-9]{1,5}", value.rsplit(":", 1)[1]):
            raise ValueError("instance_domain's port must be a number")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file of the home asked for (Settings(home=...)), not the default one:
        # a platform opened on another home never reads this host's operator settings.
        home = getattr(init_settings, "init_kwargs", {}).get("home")
        toml = TomlConfigSettingsSource(settings_cls, toml_file=Path(home or default_home()) / "config.toml")
        return (init_settings, env_settings, toml)

    _sharing = field_validator("gpu_sharing")(_check_sharing)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'dockyard.db'}"

    def node_configs(self) -> list[NodeConfig]:
        """Configured nodes, with `local` (the local engine) first unless overridden."""
        nodes = list(self.nodes)
        if not any(n.name == LOCAL_NODE for n in nodes):
            nodes.insert(
                0,
                NodeConfig(
                    name=LOCAL_NODE,
                    runtime=self.runtime,
                    url=self.docker_url,
                    simulated_gpus=self.simulated_gpus,
                    cpus_per_gpu=self.cpus_per_gpu,
                    memory_per_gpu_gb=self.memory_per_gpu_gb,
                    public_host=self.public_host,
                    sized_disks=self.sized_disks,
                    gpu_sharing=self.gpu_sharing,
                ),
            )
        return nodes


@lru_cache
def get_settings() -> Settings:
    return Settings()
