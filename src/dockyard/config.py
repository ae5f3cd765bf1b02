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
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from dockyard.core.validation import NAME_PATTERN

LOCAL_NODE = "local"


def default_home() -> Path:
    return Path(os.environ.get("DOCKYARD_HOME") or Path.home() / ".local/share/dockyard")


class NodeConfig(BaseModel):
    """One Docker engine that holds GPUs."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str = "unix:///var/run/docker.sock"
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Declared GPUs for hosts without NVIDIA GPUs ("A100-80GB:4@550.54.15").
    simulated_gpus: str | None = None
    # Shares of the host given to each GPU; default: the host's divided by its GPUs.
    cpus_per_gpu: float | None = Field(default=None, gt=0)
    memory_per_gpu_gb: float | None = Field(default=None, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError("node url must start with unix://, tcp:// or ssh://")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCKYARD_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    # The local engine is node `local` unless `nodes` says otherwise.
    docker_url: str = "unix:///var/run/docker.sock"
    simulated_gpus: str | None = None
    cpus_per_gpu: float | None = Field(default=None, gt=0)
    memory_per_gpu_gb: float | None = Field(default=None, gt=0)
    nodes: list[NodeConfig] = Field(default_factory=list)
    # Any small image on remote nodes, used to run nvidia-smi there.
    gpu_probe_image: str = "dockyard/debian:bookworm"

    # A GPU-less instance (and no-GPU mode) gets this small share.
    no_gpu_cpus: float = Field(default=0.5, gt=0)
    no_gpu_memory_gb: float = Field(default=2.0, gt=0)
    shm_size_gb: float = Field(default=8.0, gt=0)
    pids_limit: int = Field(default=8192, gt=0)
    stop_timeout_s: int = Field(default=10, ge=0)

    # The image catalog, and a CA bundle that image builds trust (TLS-intercepting proxies).
    catalog_path: Path | None = None
    build_ca_bundle: Path | None = None
    # Quota on the images each user saves from their instances.
    max_saved_images: int = Field(default=10, ge=0)
    max_saved_images_gb: float = Field(default=100.0, ge=0)

    reconcile_interval_s: float = Field(default=5.0, gt=0)
    max_body_bytes: int = 256 * 1024
    workers: int = Field(default=16, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_home() / "config.toml")
        return (init_settings, env_settings, toml)

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
                    url=self.docker_url,
                    simulated_gpus=self.simulated_gpus,
                    cpus_per_gpu=self.cpus_per_gpu,
                    memory_per_gpu_gb=self.memory_per_gpu_gb,
                ),
            )
        return nodes


@lru_cache
def get_settings() -> Settings:
    return Settings()
