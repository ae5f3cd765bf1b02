"""A cluster across two Docker engines: engine 1 (this host's) and engine 2 (its
own network namespace, tests/engines.py) in one Docker swarm; the members share an
attachable overlay network and run a torchrun job (gloo) together."""

import json

import docker
import pytest

from tests.engines import ENGINE_ADDR, HOST_ADDR, SOCKET, clean_engine, second_engine
from tests.harness import BASE_IMAGE, Server
from tests.integration.test_clusters import IMAGE, TORCHRUN, exec_, put_script, results, run_everywhere, wait_until


def ensure_swarm(local: docker.DockerClient, remote: docker.DockerClient) -> None:
    """Engine 1 manages a swarm advertised on the veth link; engine 2 is in it. Idempotent:
    a swarm already there is kept; one advertised elsewhere skips these tests."""
    state = local.info()["Swarm"]
    if state["LocalNodeState"] == "inactive":
        local.swarm.init(advertise_addr=HOST_ADDR, listen_addr=f"{HOST_ADDR}:2377")
        state = local.info()["Swarm"]
    if not state.get("ControlAvailable") or state.get("NodeAddr") != HOST_ADDR:
        pytest.skip(f"engine 1 is in a swarm advertised at {state.get('NodeAddr')}, not {HOST_ADDR}")
    members = {n.id for n in local.nodes.list()}
    remote_state = remote.info()["Swarm"]
    if remote_state["LocalNodeState"] == "active" and remote_state["NodeID"] in members:
        return
    if remote_state["LocalNodeState"] != "inactive":
        remote.swarm.leave(force=True)
    token = local.swarm.attrs["JoinTokens"]["Worker"]
    remote.swarm.join(remote_addrs=[f"{HOST_ADDR}:2377"], join_token=token, advertise_addr=ENGINE_ADDR,
                      listen_addr=f"{ENGINE_ADDR}:2377")


@pytest.fixture(scope="module")
def two_hosts(docker_client, pytorch_image):
    ref = pytorch_image.tags[0]
    engine2 = second_engine([BASE_IMAGE, ref])
    ensure_swarm(docker_client, engine2)
    # This sandbox's kernel has no IPsec (ESP) for the swarm: the overlay runs unencrypted
    # here; encryption is the default everywhere else (tests/unit/test_config.py).
    srv = Server(simulated_gpus="A100-80GB:1", cpus_per_gpu="1", memory_per_gpu_gb="2",
                 cluster_network_encrypted="false")
    (srv.home / "config.toml").write_text(
        f'[[nodes]]\nname = "gpu2"\nurl = "{SOCKET}"\nsimulated_gpus = "A100-80GB:1@550.54.15"\n'
        "cpus_per_gpu = 1\nmemory_per_gpu_gb = 2\n"
    )
    srv.start()
    srv.add_user("ops", admin=True)
    srv.api = srv.add_user("hank")
    srv.engine2 = engine2
    yield srv
    srv.close()
    clean_engine(engine2)


def test_a_cluster_spans_two_engines_on_an_overlay_network(two_hosts, docker_client):
    srv, api = two_hosts, two_hosts.api
    made = srv.cli("cluster", "create", "--name", "wide", "--nodes", "2", "--gpus", "1", "--gpu-model", "A100-80GB",
                   "--image", IMAGE, "--wait", "--json", token_of="hank", timeout=180)
    assert made.returncode == 0, made.stdout + made.stderr
    cluster = json.loads(made.stdout)
    assert cluster["network"] == "overlay" and cluster["spans"] == ["gpu2", "local"]
    assert {m["node"] for m in cluster["members"]} == {"local", "gpu2"}
    ids = [m["id"] for m in cluster["members"]]
    ips = [m["address"] for m in cluster["members"]]
    # Each member resolves the other by its stable hostname, across the engines.
    for rank, key in enumerate(ids):
        other = 1 - rank
        assert exec_(api, key, f"getent hosts wide-{other}")["output"].split() == [ips[other], f"wide-{other}"]
    for key in ids:
        put_script(api, key)
    outs = run_everywhere(api, ids, TORCHRUN + " 2>&1")
    ranks = [r for out in outs for r in results(out["output"])]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["allreduce"] for r in ranks} == {3.0}
    assert len({r["checksum"] for r in ranks}) == 1, ranks

    gone = srv.cli("cluster", "rm", "wide", "--yes", "--wait", "--json", token_of="hank", timeout=120)
    assert gone.returncode == 0, gone.stderr
    label = {"label": f"dockyard.cluster={cluster['id']}"}
    wait_until(lambda: not docker_client.networks.list(filters=label), "the overlay network is removed", 30)
    assert not srv.engine2.containers.list(all=True, filters={"label": f"dockyard.deployment={srv.deployment}"})
