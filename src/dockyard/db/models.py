"""What should be: the database is the source of truth the reconciler makes real."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from dockyard.core.kinds import ImageKind
from dockyard.core.states import ClusterStatus, ImageStatus, Status, VolumeStatus
from dockyard.db.base import Base, enum_column, utcnow


STATUS = enum_column(Status)


class Meta(Base):
    """Key-value facts about this installation (its deployment id)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 digests: a database leak reveals no token."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What it may do (services/scopes.py), a label for `dockyard tokens ls`, when it stops
    # working, and when it was last used (written at most once a minute).
    scope: Mapped[str] = mapped_column(String(16), default="all")
    name: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class SshKey(Base):
    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("user_id", "fingerprint"), UniqueConstraint("user_id", "name"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(80))
    key_type: Mapped[str] = mapped_column(String(16))
    bits: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BrowserSession(Base):
    """A signed-in browser (HttpOnly cookie), apart from the API's bearer tokens."""

    __tablename__ = "browser_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    # Set: a session of that instance's own host (its JupyterLab and ports), never of the
    # console; `ticket`: the one-time ticket that opens one, not yet exchanged; `parent`:
    # the console session it was opened from (signing out there ends it too).
    instance_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ticket: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("browser_sessions.id", ondelete="CASCADE"),
                                                  default=None, index=True)


class ServicePort(Base):
    """An HTTP port of an instance exposed at /instances/<id>/ports/<port>/: private to
    its owner, or shared by an unguessable link (stored hashed) until revoked."""

    __tablename__ = "service_ports"
    __table_args__ = (UniqueConstraint("instance_id", "port"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    port: Mapped[int] = mapped_column(Integer)
    share_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    share_expires_at: Mapped[datetime | None] = mapped_column()
    # The app was started with its base path (/instances/<id>/ports/<port>/): it gets the
    # whole path, not the part after it.
    keep_path: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PackageMirror(Base):
    """Package mirrors new instances get (core/mirrors.py): the operator's site row
    (scope "site", no user) and each user's additions (scope "user:<id>")."""

    __tablename__ = "package_mirrors"
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    pip_index_url: Mapped[str | None] = mapped_column(String(2048))
    apt_mirror_url: Mapped[str | None] = mapped_column(String(2048))
    conda_channel_url: Mapped[str | None] = mapped_column(String(2048))
    ca_bundle: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Node(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(255))
    public_host: Mapped[str | None] = mapped_column(String(255))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    cpus: Mapped[float] = mapped_column(Float, default=0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    cpus_per_gpu: Mapped[float] = mapped_column(Float, default=0)
    memory_per_gpu_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    driver_version: Mapped[str | None] = mapped_column(String(32))
    cuda_version: Mapped[str | None] = mapped_column(String(16))
    last_seen_at: Mapped[datetime | None] = mapped_column()


class Gpu(Base):
    __tablename__ = "gpus"
    __table_args__ = (UniqueConstraint("node_name", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    memory_mb: Mapped[int] = mapped_column(Integer)
    simulated: Mapped[bool] = mapped_column(Boolean)
    # A GPU that disappeared from its node stays (old instances name it) but is not placed.
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    # How its node shares it (core/sharing.py): None (whole only), time-slicing, mps, mig.
    sharing: Mapped[str | None] = mapped_column(String(16))


class GpuSlot(Base):
    """One rentable part of a GPU: a GPU that is not shared has one, one split in N parts
    has N, one in MIG mode one per MIG instance. Only slots can be assigned, each once, so
    a GPU's parts cannot be over-committed; a whole rental of a GPU takes all its slots."""

    __tablename__ = "gpu_slots"
    __table_args__ = (UniqueConstraint("gpu_id", "slot"), UniqueConstraint("id", "gpu_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu_id: Mapped[int] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    # A MIG instance: the UUID a container is given, its profile and memory.
    mig_uuid: Mapped[str | None] = mapped_column(String(64), unique=True)
    mig_profile: Mapped[str | None] = mapped_column(String(32))
    memory_mb: Mapped[int | None] = mapped_column(Integer)


class Image(Base):
    """An environment users create instances from: a catalog entry (built here), an
    image an admin registered by reference, or a user's saved system disk."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Catalog and registered images by their plain name; saved ones as "user/name:tag".
    name: Mapped[str] = mapped_column(String(128), unique=True)
    ref: Mapped[str] = mapped_column(String(255))
    kind: Mapped[ImageKind] = mapped_column(enum_column(ImageKind), default=ImageKind.REGISTERED)
    status: Mapped[ImageStatus] = mapped_column(enum_column(ImageStatus), default=ImageStatus.READY)
    status_reason: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    framework: Mapped[str | None] = mapped_column(String(32))
    framework_version: Mapped[str | None] = mapped_column(String(32))
    cuda: Mapped[str | None] = mapped_column(String(16))
    cudnn: Mapped[str | None] = mapped_column(String(16))
    python: Mapped[str | None] = mapped_column(String(16))
    os: Mapped[str | None] = mapped_column(String(32))
    min_driver: Mapped[int] = mapped_column(Integer, default=0)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(80))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The image's locked Python stack ("name==version" lines) and its digest, from its labels.
    stack_lock: Mapped[str | None] = mapped_column(Text)
    stack_lock_sha256: Mapped[str | None] = mapped_column(String(64))
    source_instance_id: Mapped[str | None] = mapped_column(String(32))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeImage(Base):
    """The image cache: which node holds which image (so creates need not wait)."""

    __tablename__ = "node_images"
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str | None] = mapped_column(String(80))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        # Names are unique per user among instances that are not released.
        # A node's SSH port belongs to one live instance.
        Index(
            "uq_instances_node_ssh_port_live",
            "node_name",
            "ssh_port",
            unique=True,
            sqlite_where=text("status != 'released'"),
            postgresql_where=text("status != 'released'"),
        ),
        Index(
            "uq_instances_owner_name_live",
            "owner_id",
            "name",
            unique=True,
            sqlite_where=text("status != 'released'"),
            postgresql_where=text("status != 'released'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer)
    # A share of one GPU ("0.5", "1g.18gb"; gpu_count is then 1), and the GPU thousandths
    # it is billed for: 1000 per whole GPU, 500 for a half.
    gpu_share: Mapped[str | None] = mapped_column(String(32))
    gpu_milli: Mapped[int] = mapped_column(Integer)
    status: Mapped[Status] = mapped_column(STATUS, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # True while started with --no-gpu: it holds no GPUs and gets the small share.
    no_gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    env: Mapped[dict] = mapped_column(JSON, default=dict)
    # Environment values marked secret: a Fernet token of their JSON (services/secrets.py),
    # decrypted only to start the container; never shown.
    secret_env: Mapped[str | None] = mapped_column(Text)
    command: Mapped[str | None] = mapped_column(JSON)  # a shell command line
    data_disk_gb: Mapped[int] = mapped_column(Integer)
    # What the node's engine keeps of the instance (runtimes/instances.Held: its container,
    # the GPUs that container was made with, its system disk kept as an image). Opaque:
    # written only through services/held.py.
    backend_state: Mapped[dict] = mapped_column(JSON, default=dict)
    # The last result of the image's environment self-test (dockyard-check).
    env_check: Mapped[dict | None] = mapped_column(JSON)
    # JupyterLab's token inside the instance: a secret the platform never shows.
    jupyter_token: Mapped[str | None] = mapped_column(String(64))
    # The SHA-256 of the token dockyard-shutdown uses from inside (services/inside.py),
    # new at each start; the token itself is only in the container.
    shutdown_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The node's port published to the container's sshd, and an optional root password
    # (shown once, at creation).
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    ssh_password: Mapped[str | None] = mapped_column(String(64))
    # Last use through the access paths (the auto-stop rules read these).
    last_ssh_at: Mapped[datetime | None] = mapped_column()
    last_jupyter_at: Mapped[datetime | None] = mapped_column()
    # Auto-stop policy: stop after this many minutes without SSH or Jupyter
    # activity, and/or after this many minutes running; None = never.
    auto_stop_idle_minutes: Mapped[int | None] = mapped_column(Integer)
    auto_stop_max_minutes: Mapped[int | None] = mapped_column(Integer)
    # The other rules (core/autostop.py): every GPU under a percent (None: 5) for N minutes,
    # a stop time, the start command's exit, a named process's exit; and the warning's state:
    # when it was posted (a stop is pending) and the last "keep running".
    auto_stop_gpu_idle_minutes: Mapped[int | None] = mapped_column(Integer)
    auto_stop_gpu_idle_percent: Mapped[int | None] = mapped_column(Integer)
    auto_stop_at: Mapped[datetime | None] = mapped_column()
    auto_stop_on_exit: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    auto_stop_when_exits: Mapped[str | None] = mapped_column(String(64))
    auto_stop_warned_at: Mapped[datetime | None] = mapped_column()
    auto_stop_kept_at: Mapped[datetime | None] = mapped_column()
    # the cluster this instance is a member of, and its rank there (0 = master).
    cluster_id: Mapped[str | None] = mapped_column(String(32), index=True)
    cluster_rank: Mapped[int | None] = mapped_column(Integer)
    # The start queue (core/queue.py): arrival order among all waiters, when it joined,
    # when it gives up (None: never), and the status it leaves the queue into.
    queue_seq: Mapped[int | None] = mapped_column(Integer, index=True)
    queued_at: Mapped[datetime | None] = mapped_column()
    queue_deadline: Mapped[datetime | None] = mapped_column()
    queue_next: Mapped[str | None] = mapped_column(String(16))
    # Volumes (docs/volumes.md): a release keeps the data disk as a volume (named
    # keep_data_as, else after the instance) unless this was turned off; released after
    # auto_release_days stopped (None: the operator's setting). The notices sent about
    # the stop that began at release_notice_stop: 0 none, 1 three days before, 2 one day.
    keep_data_on_release: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    keep_data_as: Mapped[str | None] = mapped_column(String(64))
    auto_release_days: Mapped[int | None] = mapped_column(Integer)
    release_notice_level: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    release_notice_stop: Mapped[datetime | None] = mapped_column()
    # A migration (services/migration.py): while migrating, the node its disks are copied
    # to; after it moved, the node its old disks are on until it has run on the new one.
    migrate_peer: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    released_at: Mapped[datetime | None] = mapped_column()

    @hybrid_property
    def container_id(self) -> str | None:
        """The engine's container holding the instance, if any: the one key of
        `backend_state` the platform reads (runtimes/instances.CONTAINER_KEY)."""
        return (self.backend_state or {}).get("container")

    @container_id.inplace.expression
    @classmethod
    def _container_id_expression(cls):
        return cls.backend_state["container"].as_string()


class GpuAssignment(Base):
    """A GPU slot held by an instance. The primary key on slot_id makes a double assignment
    impossible: a second insert for the same slot fails in the database itself; the
    foreign key on (slot_id, gpu_id) keeps gpu_id the slot's own GPU."""

    __tablename__ = "gpu_assignments"
    __table_args__ = (ForeignKeyConstraint(["slot_id", "gpu_id"], ["gpu_slots.id", "gpu_slots.gpu_id"]),)
    slot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu_id: Mapped[int] = mapped_column(ForeignKey("gpus.id"), index=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceEvent(Base):
    __tablename__ = "instance_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    from_status: Mapped[Status | None] = mapped_column(STATUS)
    to_status: Mapped[Status] = mapped_column(STATUS)
    cause: Mapped[str] = mapped_column(Text)
    # On a '-> running' event: whether the container got GPUs (billing prices the run by it;
    # migration 0021 filled it in on older ones). NULL on other events.
    with_gpus: Mapped[bool | None] = mapped_column(Boolean)

    # Metering scans the events that start and end runs by status and time.
    __table_args__ = (Index("ix_instance_events_status_at", "to_status", "at"),)


class AuditEntry(Base):
    """What an admin (or the platform on an admin's behalf) did: append-only."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text, default="")


class IdempotentRequest(Base):
    """A POST sent with an Idempotency-Key: the first answer, replayed to a retry with the
    same key from the same user for a day (api/idempotency.py). No status code yet: the
    first request is still running, or was cut short by a crash."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # of the method, path and body
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# The billing tables live in their own module; imported here so the metadata holds them.
from dockyard.db import billing_models  # noqa: E402,F401


class Cluster(Base):
    """K instances (its members) placed together on a private network of their own."""

    __tablename__ = "clusters"
    __table_args__ = (
        Index("uq_clusters_owner_name_live", "owner_id", "name", unique=True,
              sqlite_where=text("status != 'released'"), postgresql_where=text("status != 'released'")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    members: Mapped[int] = mapped_column(Integer)
    gpus_per_member: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    status: Mapped[ClusterStatus] = mapped_column(enum_column(ClusterStatus), default=ClusterStatus.LIVE)
    # "bridge" on one engine, "overlay" (Docker swarm) across engines; the node whose
    # engine creates the network, and its subnet (members' addresses are fixed in it).
    network_driver: Mapped[str] = mapped_column(String(16))
    network_node: Mapped[str] = mapped_column(String(64))
    subnet: Mapped[str | None] = mapped_column(String(64))
    master_port: Mapped[int] = mapped_column(Integer, default=29500)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column()


class Volume(Base):
    """A user's disk of its own, on one node: made by hand or kept from a released
    instance's data disk. Mounted read-write by at most one live instance (instance_id,
    at mount_path); charged per GB per day until deleted."""

    __tablename__ = "volumes"
    __table_args__ = (
        Index("uq_volumes_owner_name_live", "owner_id", "name", unique=True,
              sqlite_where=text("status != 'deleted'"), postgresql_where=text("status != 'deleted'")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name"))
    size_gb: Mapped[int] = mapped_column(Integer)
    # The engine's volume (and disk image) name: a kept data disk keeps its own.
    engine_name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[VolumeStatus] = mapped_column(enum_column(VolumeStatus), default=VolumeStatus.READY)
    status_reason: Mapped[str | None] = mapped_column(Text)
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), index=True)
    mount_path: Mapped[str | None] = mapped_column(String(255))
    source_instance_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column()
