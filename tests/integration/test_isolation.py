"""One network per user: a user's containers reach each other, never another user's."""

from tests.harness import wait_status

LISTEN = ("perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>7000,Listen=>5,ReuseAddr=>1)"
          " or die; while($c=$s->accept){print $c \"hello\\n\"; close $c}'")


def ip_of(docker_client, server, instance_id):
    attrs = docker_client.containers.get(f"dy-{server.deployment}-{instance_id}").attrs
    (network,) = attrs["NetworkSettings"]["Networks"].values()
    return network["IPAddress"]


def connect(api, instance_id, ip):
    script = f"timeout 3 bash -c 'cat < /dev/tcp/{ip}/7000'"
    return api.post(f"/instances/{instance_id}/exec", json={"command": ["sh", "-c", script]}).json()


def test_users_cannot_reach_each_others_containers(server, docker_client):
    alice, bob = server.alice, server.bob
    target = alice.post("/instances", json={"image": "debian-12", "gpu_count": 0, "command": LISTEN}).json()
    friend = alice.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
    stranger = bob.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
    for api, instance in ((alice, target), (alice, friend), (bob, stranger)):
        wait_status(api, instance["id"], "running")
    ip = ip_of(docker_client, server, target["id"])

    same_user = connect(alice, friend["id"], ip)
    assert same_user["exit_code"] == 0 and same_user["output"] == "hello\n"
    other_user = connect(bob, stranger["id"], ip)
    assert other_user["exit_code"] != 0 and "hello" not in other_user["output"]

    for api, instance in ((alice, target), (alice, friend), (bob, stranger)):
        api.delete(f"/instances/{instance['id']}").raise_for_status()
