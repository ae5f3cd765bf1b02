"""A tenant who tries to hurt the platform or another tenant, with ordinary requests and
with what they control: the programs in their own container."""

import json
import socket
import subprocess
import threading
import time

import httpx
import pytest

from tests.harness import Server, wait_status

MIB = 1024 * 1024
# What a tenant puts in place of the programs the platform might run in their container.
HANG = "#!/bin/bash\nexec sleep 1000\n"


def rss_bytes(srv: Server) -> int:
    with open(f"/proc/{srv.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def exec_(api, key, *command, **body):
    return api.post(f"/instances/{key}/exec", json={"command": list(command), **body}, timeout=120).json()


@pytest.fixture(scope="module")
def hostile():
    srv = Server(check_timeout_s="5", activity_interval_s="1", pids_limit="1024", metrics_interval_s="1",
                 metrics_disk_interval_s="2").start()
    srv.alice, srv.bob = srv.add_user("alice"), srv.add_user("bob")
    srv.add_user("root-admin", admin=True).post(
        "/images", json={"ref": "dockyard/debian:bookworm", "name": "debian-12"}).raise_for_status()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def two_instances(hostile):
    made = [(api, api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": name}).json())
            for api, name in ((hostile.alice, "evil"), (hostile.bob, "victim"))]
    for api, instance in made:
        wait_status(api, instance["id"], "running", timeout=120)
    return made[0][1]["id"], made[1][1]["id"]


def test_exec_of_yes_keeps_the_server_small(hostile, two_instances):
    evil, _ = two_instances
    before = rss_bytes(hostile)
    answer = exec_(hostile.alice, evil, "yes")
    assert answer["truncated"] and answer["exit_code"] == -1
    assert len(answer["output"]) <= MIB
    # A stream the client leaves after 20 MB: the command is stopped, the memory stays.
    with hostile.alice.stream("POST", f"/instances/{evil}/exec",
                              json={"command": ["yes"], "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        got = 0
        for chunk in response.iter_bytes():
            got += len(chunk)
            if got > 20 * MIB:
                break
    assert rss_bytes(hostile) - before < 100 * MIB
    for _ in range(50):
        if "yes" not in exec_(hostile.alice, evil, "ps", "-eo", "comm")["output"].split():
            break
        time.sleep(0.2)
    else:
        pytest.fail("`yes` still runs in the instance after the client left")
    assert httpx.get(f"{hostile.url}/healthz").status_code == 200


def test_exec_streams_and_ends_at_its_deadline(hostile, two_instances):
    evil, _ = two_instances
    lines = []
    with hostile.alice.stream("POST", f"/instances/{evil}/exec", timeout=60,
                              json={"command": ["sh", "-c", "echo one; sleep 100; echo two"], "stream": True,
                                    "timeout_s": 2}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0] == {"output": "one\n"}
    assert lines[-1] == {"exit_code": -1, "timed_out": True, "truncated": False}
    assert exec_(hostile.alice, evil, "sh", "-c", "exit 7") == {
        "exit_code": 7, "output": "", "timed_out": False, "truncated": False}
    # The CLI streams, and says why a command was stopped.
    done = hostile.cli("exec", evil, "--timeout", "2s", "--", "sh", "-c", "echo hi; sleep 50", token_of="alice")
    assert done.stdout == "hi\n" and "ran past --timeout" in done.stderr and done.returncode == 124


def test_a_huge_log_is_streamed_not_gathered(hostile):
    api = hostile.alice
    noisy = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "noisy",
                                         "command": "head -c 1000000000 /dev/zero | tr '\\0' x; echo; echo written; "
                                                    "sleep infinity"}).json()
    wait_status(api, noisy["id"], "running", timeout=120)
    deadline = time.monotonic() + 300  # the whole GB in the engine's log first
    while "written" not in api.get(f"/instances/{noisy['id']}/logs", params={"tail": 1}).text:
        assert time.monotonic() < deadline, "the instance did not write its 1 GB log in time"
        time.sleep(2)
    before = rss_bytes(hostile)
    got = 0
    with api.stream("GET", f"/instances/{noisy['id']}/logs", params={"tail": 100000}, timeout=120) as response:
        for chunk in response.iter_bytes():
            got += len(chunk)
    assert got > MIB  # something came, in one line far longer than any buffer
    assert rss_bytes(hostile) - before < 100 * MIB
    assert httpx.get(f"{hostile.url}/healthz").status_code == 200
    api.delete(f"/instances/{noisy['id']}")


def test_replaced_programs_hang_nothing_of_the_platform(hostile, two_instances, tmp_path):
    evil, _ = two_instances
    alice = hostile.alice
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    key = (tmp_path / "key.pub").read_text().strip()
    alice.post("/keys", json={"name": "k1", "public_key": key}).raise_for_status()
    script = ";".join(f"printf '{HANG}' > {path} && chmod +x {path}" for path in
                      ("/usr/local/bin/dockyard-check", "/bin/cat", "/usr/bin/df", "/usr/bin/du", "/bin/sh"))
    assert exec_(alice, evil, "bash", "-c", script)["exit_code"] == 0
    started = time.monotonic()
    check = alice.post(f"/instances/{evil}/check", timeout=60).json()["env_check"]
    assert not check["ok"] and time.monotonic() - started < 30
    # Keys go in by an archive upload: a start works, and installs them, with no shell.
    alice.post(f"/instances/{evil}/stop").raise_for_status()
    wait_status(alice, evil, "stopped", timeout=120)
    alice.post(f"/instances/{evil}/start", json={}).raise_for_status()
    wait_status(alice, evil, "running", timeout=120)
    keys = exec_(alice, evil, "bash", "-c", "while read -r l; do echo \"$l\"; done < /root/.ssh/authorized_keys")
    assert key.split()[1] in keys["output"]
    # The data disk is measured with the platform's df and du, not the tenant's.
    assert exec_(alice, evil, "bash", "-c", "head -c 30000000 /dev/zero > /root/data/blob")["exit_code"] == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        disk = alice.get(f"/instances/{evil}/metrics").json()["disk"]
        if disk and disk["used"] >= 30_000_000:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no data disk reading with df and du replaced: {disk}")
    assert httpx.get(f"{hostile.url}/healthz").status_code == 200


def test_a_fork_bomb_and_a_memory_hog_leave_the_neighbour_responsive(hostile, two_instances):
    evil, victim = two_instances
    bomb = threading.Thread(target=exec_, args=(hostile.alice, evil, "bash", "-c",
                                                "f() { f | f & }; f; sleep 20"), kwargs={"timeout_s": 20})
    hog = threading.Thread(target=exec_, args=(hostile.alice, evil, "bash", "-c",
                                               "x=$(head -c 8000000000 /dev/zero | tr '\\0' x)"),
                           kwargs={"timeout_s": 20})
    bomb.start(), hog.start()
    time.sleep(3)
    try:
        for _ in range(3):
            started = time.monotonic()
            assert exec_(hostile.bob, victim, "echo", "alive")["output"] == "alive\n"
            assert time.monotonic() - started < 15
            time.sleep(1)
    finally:
        bomb.join(), hog.join()


def test_instances_run_without_raw_sockets_and_cannot_reach_the_host(hostile, two_instances, docker_client):
    evil, _ = two_instances
    status = exec_(hostile.alice, evil, "grep", "CapEff", "/proc/1/status")["output"]
    capabilities = int(status.split()[1], 16)
    for bit in (13, 27, 31, 8, 29):  # NET_RAW, MKNOD, SETFCAP, SETPCAP, AUDIT_WRITE
        assert not capabilities & (1 << bit)
    assert capabilities & (1 << 18)  # SYS_CHROOT: sshd still works
    container = docker_client.containers.get(f"dy-{hostile.deployment}-{evil}")
    (network,) = container.attrs["NetworkSettings"]["Networks"].values()
    listener = socket.create_server(("0.0.0.0", 0))  # the backlog answers: no accept needed
    port = listener.getsockname()[1]
    try:
        reached = exec_(hostile.alice, evil, "timeout", "5", "bash", "-c",
                        f"echo > /dev/tcp/{network['Gateway']}/{port}")
        assert reached["exit_code"] != 0
        # From the host itself the port answers: only instances are kept out.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        listener.close()

