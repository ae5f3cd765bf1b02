"""Settings from $DOCKYARD_HOME/config.toml and DOCKYARD_* environment variables."""

import os

import pytest
from pydantic import ValidationError

from dockyard.config import LOCAL_NODE, NodeConfig, Settings

CONFIG = """
port = 8123
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


@pytest.fixture
def home(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith("DOCKYARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path))
    return tmp_path


def test_defaults_without_config_file(home):
    s = Settings()
    assert s.home == home
    assert s.port == 8000
    assert s.nodes == []
    assert s.db_url == f"sqlite:///{home / 'dockyard.db'}"
    (local,) = s.node_configs()
    assert local.name == LOCAL_NODE
    assert local.url == "unix:///var/run/docker.sock"
    assert local.simulated_gpus is None


def test_reads_config_toml(home):
    (home / "config.toml").write_text(CONFIG)
    s = Settings()
    assert s.port == 8123
    assert s.simulated_gpus == "A100-80GB:4,RTX-4090:2"
    (node,) = s.nodes
    assert node == NodeConfig(
        name="gpu2", url="tcp://10.0.0.2:2376", tls_ca="/etc/dockyard/ca.pem", tls_cert="/etc/dockyard/cert.pem",
        tls_key="/etc/dockyard/key.pem", cpus_per_gpu=8, memory_per_gpu_gb=64
    )


def test_environment_overrides_file(home, monkeypatch):
    (home / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("DOCKYARD_PORT", "9001")
    monkeypatch.setenv("DOCKYARD_SIMULATED_GPUS", "H100:1")
    s = Settings()
    assert s.port == 9001
    assert s.simulated_gpus == "H100:1"
    assert [n.name for n in s.nodes] == ["gpu2"]  # untouched by the environment


def test_database_url_from_environment(home, monkeypatch):
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", "postgresql://db/dockyard")
    assert Settings().db_url == "postgresql://db/dockyard"


def test_node_configs_puts_local_first_with_settings_values(home, monkeypatch):
    (home / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("DOCKYARD_DOCKER_URL", "unix:///run/user/1000/docker.sock")
    monkeypatch.setenv("DOCKYARD_CPUS_PER_GPU", "6")
    nodes = Settings().node_configs()
    assert [n.name for n in nodes] == [LOCAL_NODE, "gpu2"]
    local = nodes[0]
    assert local.url == "unix:///run/user/1000/docker.sock"
    assert local.simulated_gpus == "A100-80GB:4,RTX-4090:2"
    assert local.cpus_per_gpu == 6
    assert local.memory_per_gpu_gb is None
    assert nodes[1].url == "tcp://10.0.0.2:2376"


def test_explicit_local_node_is_not_duplicated(home):
    (home / "config.toml").write_text(
        '[[nodes]]\nname = "gpu2"\nurl = "ssh://me@gpu2"\n\n'
        '[[nodes]]\nname = "local"\nurl = "unix:///run/other.sock"\nsimulated_gpus = "T4:1"\n'
    )
    nodes = Settings(simulated_gpus="H100:8").node_configs()
    assert [(n.name, n.url, n.simulated_gpus) for n in nodes] == [
        ("gpu2", "ssh://me@gpu2", None),
        ("local", "unix:///run/other.sock", "T4:1"),
    ]


@pytest.mark.parametrize("url", ["http://10.0.0.2:2376", "10.0.0.2:2376", "file:///var/run/docker.sock", ""])
def test_bad_node_url_scheme_rejected(url):
    with pytest.raises(ValidationError, match="unix://, tcp:// or ssh://"):
        NodeConfig(name="gpu2", url=url)


def test_bad_node_url_in_config_file_rejected(home):
    (home / "config.toml").write_text('[[nodes]]\nname = "gpu2"\nurl = "https://10.0.0.2:2376"\n')
    with pytest.raises(ValidationError, match="unix://, tcp:// or ssh://"):
        Settings()


@pytest.mark.parametrize("name", ["bad name", "a/b", "-x", "a;b", ""])
def test_bad_node_name_rejected(name):
    with pytest.raises(ValidationError):
        NodeConfig(name=name)


def test_bad_port_in_environment_rejected(home, monkeypatch):
    monkeypatch.setenv("DOCKYARD_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def test_non_positive_share_rejected(home):
    with pytest.raises(ValidationError):
        Settings(cpus_per_gpu=0)


@pytest.mark.parametrize("tls", [{}, {"tls_ca": "/ca.pem"}, {"tls_cert": "/c.pem", "tls_key": "/k.pem"}])
def test_tcp_engine_without_verified_tls_is_refused(tls):
    with pytest.raises(ValidationError, match="tcp:// engine needs tls_ca, tls_cert and tls_key"):
        NodeConfig(name="gpu2", url="tcp://10.0.0.2:2375", **tls)


def test_cluster_networks_are_encrypted_by_default(home):
    assert Settings().cluster_network_encrypted is True


def test_a_home_given_reads_its_own_config_not_the_hosts(tmp_path, monkeypatch):
    """The operator's config (the default home, where run.sh writes one) never reaches a
    platform opened on another home, such as a test's."""
    operator, other = tmp_path / "operator", tmp_path / "other"
    operator.mkdir()
    other.mkdir()
    (operator / "config.toml").write_text('port = 9001\nsimulated_gpus = "A100-80GB:4,RTX-4090:2"\n')
    monkeypatch.setenv("DOCKYARD_HOME", str(operator))
    assert Settings().port == 9001
    assert (Settings(home=other).port, Settings(home=other).simulated_gpus) == (8000, None)
    (other / "config.toml").write_text("port = 9002\n")
    assert Settings(home=other).port == 9002
