"""An instance's SSH port held by another program on the node: the instance moves to
another port instead of failing, keeping its system disk."""

import json
import socket

from tests.harness import wait_status


def hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", port))
    holder.listen()
    return holder


def ssh_port(instance: dict) -> int:
    return int(instance["ssh_command"].split()[2])  # ssh -p PORT root@HOST


def events(api, key) -> list[str]:
    return [e["cause"] for e in api.get(f"/instances/{key}/events").json()]


def test_a_taken_ssh_port_moves_the_instance(server):
    first = int(server.env["DOCKYARD_SSH_PORT_MIN"])
    taken = [hold(port) for port in range(first, first + 4)]  # whatever the next instance gets
    try:
        result = server.cli("create", "--image", "debian-12", "--gpu-model", "A100-80GB", "--gpus", "1",
                            "--name", "portless", "--json", token_of="alice")
        assert result.returncode == 0, result.stderr
        key = json.loads(result.stdout)["id"]
        running = wait_status(server.alice, key, "running", timeout=90)
        held = {s.getsockname()[1] for s in taken}
        assert ssh_port(running) not in held
        assert any("is held by another program" in cause for cause in events(server.alice, key))
        # Restarted while its new port is taken too: it moves again, with its system disk.
        assert server.cli("exec", key, "--", "sh", "-c", "echo kept > /root/sys.txt", token_of="alice").returncode == 0
        assert server.cli("stop", key, "--wait", token_of="alice").returncode == 0
        taken.append(hold(ssh_port(running)))
        assert server.cli("start", key, "--wait", token_of="alice").returncode == 0
        again = wait_status(server.alice, key, "running")
        assert ssh_port(again) not in held | {ssh_port(running)}
        out = server.cli("exec", key, "--", "cat", "/root/sys.txt", token_of="alice")
        assert out.stdout.strip() == "kept"
    finally:
        for s in taken:
            s.close()
    server.cli("rm", "portless", "--wait", token_of="alice")
