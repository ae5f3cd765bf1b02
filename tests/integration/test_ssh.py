"""SSH into instances with the stock OpenSSH client: keys, ssh, scp, sftp, port forwarding,
ssh-config; only the owner's registered keys get in."""

import subprocess
import time

import pytest

from tests.harness import Server, wait_status

IMAGE = "pytorch-2.13-cpu"  # built by tests/integration/test_pytorch_image.py's fixture if missing


def keypair(tmp_path, name, kind="ed25519", bits=None):
    path = tmp_path / name
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)] + (["-b", str(bits)] if bits else [])
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="module")
def ssh_server(docker_client, pytorch_image):
    srv = Server(activity_interval_s="1").start()
    srv.add_user("ops", admin=True)
    srv.api = srv.add_user("hana")
    srv.other = srv.add_user("ivan")
    yield srv
    srv.close()


def ssh_args(instance, key, *extra):
    _, _, port, target = instance["ssh_command"].split()
    return ["-i", str(key), "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *extra, target]


def ssh(instance, key, command, **kwargs):
    return subprocess.run(["ssh", *ssh_args(instance, key), command], capture_output=True, text=True, timeout=60,
                          **kwargs)


def wait_for_sshd(instance, key):
    for _ in range(60):
        if ssh(instance, key, "true").returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(ssh(instance, key, "true").stderr)


def test_keys_are_checked(ssh_server, tmp_path):
    api = ssh_server.api
    weak = keypair(tmp_path, "weak", "rsa", 1024)
    refused = api.post("/keys", json={"name": "weak", "public_key": weak.with_suffix(".pub").read_text()})
    assert refused.status_code == 400 and "1024 bits" in refused.json()["detail"]
    garbage = api.post("/keys", json={"name": "junk", "public_key": "ssh-ed25519 not-base64 me"})
    assert garbage.status_code == 400 and "public_key" in garbage.json()["detail"]
    two = api.post("/keys", json={"name": "two", "public_key": "ssh-ed25519 AAAA\nssh-ed25519 BBBB"})
    assert two.status_code == 400 and "exactly one key" in two.json()["detail"]
    good = keypair(tmp_path, "good")
    added = ssh_server.cli("keys", "add", str(good.with_suffix(".pub")), token_of="hana")
    assert added.returncode == 0 and "ED25519 256 bits SHA256:" in added.stdout
    assert ssh_server.cli("keys", "add", str(good.with_suffix(".pub")), "--name", "again", token_of="hana").returncode == 1
    listed = ssh_server.cli("keys", "ls", "--json", token_of="hana", check=True).stdout
    assert '"name": "good"' in listed
    assert ssh_server.other.get("/keys").json() == []
    assert ssh_server.cli("keys", "rm", "good", token_of="hana", check=True).returncode == 0


def test_ssh_scp_sftp_and_forwarding_with_the_stock_client(ssh_server, tmp_path):
    api = ssh_server.api
    key, stranger = keypair(tmp_path, "mine"), keypair(tmp_path, "stranger")
    api.post("/keys", json={"name": "mine", "public_key": key.with_suffix(".pub").read_text()}).raise_for_status()
    ivans = keypair(tmp_path, "ivans")
    ssh_server.other.post("/keys", json={"name": "ivans", "public_key": ivans.with_suffix(".pub").read_text()})
    instance = api.post("/instances", json={"image": IMAGE, "gpu_count": 1, "name": "box"}).json()
    instance = wait_status(api, instance["id"], "running", timeout=120)
    assert instance["ssh_command"].startswith("ssh -p ")
    wait_for_sshd(instance, key)

    # A command, with the image's Python and the instance's GPUs in the environment.
    out = ssh(instance, key, "python -c 'import torch; print(torch.__version__)'; echo $NVIDIA_VISIBLE_DEVICES")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["2.13.0+cpu", instance["gpus"][0]["uuid"]]

    # scp both ways, and sftp.
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 4096)
    opts = ssh_args(instance, key)[:-1]
    scp_opts = ["-P" if o == "-p" else o for o in opts]
    target = instance["ssh_command"].split()[-1]
    assert subprocess.run(["scp", *scp_opts, str(payload), f"{target}:/root/data/"], capture_output=True).returncode == 0
    back = tmp_path / "back.bin"
    assert subprocess.run(["scp", *scp_opts, f"{target}:/root/data/payload.bin", str(back)],
                          capture_output=True).returncode == 0
    assert back.read_bytes() == payload.read_bytes()
    sftp = subprocess.run(["sftp", *scp_opts, target], input="put /etc/hostname /root/h.txt\nls /root\n",
                          capture_output=True, text=True, timeout=60)
    assert sftp.returncode == 0 and "h.txt" in sftp.stdout

    # ssh -L: a server inside the instance, reached through the tunnel.
    ssh(instance, key, "nohup python -m http.server 8765 --directory /root/data >/dev/null 2>&1 &")
    local_port = 40000 + ssh_server.port % 1000
    tunnel = subprocess.Popen(["ssh", "-N", "-L", f"{local_port}:127.0.0.1:8765", *ssh_args(instance, key)])
    try:
        for _ in range(40):
            got = subprocess.run(["python3", "-c", f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{local_port}/').status)"],
                                 capture_output=True, text=True)
            if got.stdout.strip() == "200":
                break
            time.sleep(0.5)
        assert got.stdout.strip() == "200", got.stderr
    finally:
        tunnel.terminate()

    # A session that stays open is noticed as activity.
    before = api.get("/instances/box").json()["last_ssh_at"]
    time.sleep(1.5)
    ssh(instance, key, "sleep 4")
    after = api.get("/instances/box").json()["last_ssh_at"]
    assert after is not None and (before is None or after > before)

    # Keys that are not the owner's do not get in: a stranger's, another user's.
    assert ssh(instance, stranger, "true").returncode == 255
    assert ssh(instance, ivans, "true").returncode == 255

    # ssh-config: `ssh box` just works.
    config = tmp_path / "ssh_config"
    ssh_server.cli("ssh-config", "--path", str(config), token_of="hana", check=True)
    by_name = subprocess.run(["ssh", "-F", str(config), "-i", str(key), "-o", "BatchMode=yes",
                              "-o", "UserKnownHostsFile=/dev/null", "box", "hostname"], capture_output=True, text=True)
    assert by_name.returncode == 0 and by_name.stdout.strip() == "box", by_name.stderr

    # A removed key stops working at the next start; the remaining ones keep working.
    second = keypair(tmp_path, "second")
    api.post("/keys", json={"name": "second", "public_key": second.with_suffix(".pub").read_text()}).raise_for_status()
    api.delete("/keys/mine").raise_for_status()
    api.post("/instances/box/stop").raise_for_status()
    wait_status(api, instance["id"], "stopped")
    api.post("/instances/box/start").raise_for_status()
    wait_status(api, instance["id"], "running")
    wait_for_sshd(instance, second)
    assert ssh(instance, key, "true").returncode == 255
    api.delete("/instances/box").raise_for_status()


def test_optional_password_is_shown_once(ssh_server):
    api = ssh_server.api
    created = api.post("/instances", json={"image": IMAGE, "gpu_count": 0, "ssh_password": True}).json()
    assert len(created["ssh_password"]) >= 20
    assert api.get(f"/instances/{created['id']}").json()["ssh_password"] is None
    assert all(i["ssh_password"] is None for i in api.get("/instances").json())
    api.delete(f"/instances/{created['id']}").raise_for_status()
