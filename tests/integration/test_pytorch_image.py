"""The offline PyTorch image, built from images/pytorch-cuda and run with the plain Docker SDK.

The session fixture `pytorch_image` (tests/conftest.py) builds `dockyard/pytorch:2.13.0-cpu`
(catalog entry pytorch-2.13-cpu: Debian 12 base, torch from /opt/wheels) when the engine does
not have it yet, so a machine builds it once (a few minutes); DOCKYARD_REBUILD_IMAGES=1
forces a rebuild. No Dockyard
server is involved: this checks the image contract (entrypoint, SSH, JupyterLab,
dockyard-check) that the platform relies on.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from dockyard.runtimes.image_lock import lock_digest, stack_lines

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

TOKEN = "tok-" + uuid.uuid4().hex
SSH_PASSWORD = "pw-" + uuid.uuid4().hex
LABEL = {"org.dockyard.test": "pytorch-image"}


@pytest.fixture(scope="module")
def client():
    return docker.from_env(timeout=600)


@pytest.fixture(scope="module")
def image(pytorch_image):
    return pytorch_image


def ssh_keypair(directory: Path, name: str) -> tuple[Path, str]:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, capture_output=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def run_container(client, image, volume, env: dict, command=None):
    return client.containers.run(
        image.id, command=command, detach=True, environment=env, labels=LABEL,
        name=f"dockyard-imgtest-{uuid.uuid4().hex[:8]}",
        volumes={volume.name: {"bind": "/root/data", "mode": "rw"}},
    )


def sh(container, script: str, env: dict | None = None) -> tuple[int, str]:
    code, output = container.exec_run(["bash", "-c", script], environment=env)
    return code, output.decode(errors="replace")


def wait_for(what: str, probe, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what} not ready after {seconds:.0f} s (last probe: {last!r})")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ssh")
    directory.chmod(0o700)
    good, good_pub = ssh_keypair(directory, "allowed")
    bad, _ = ssh_keypair(directory, "stranger")
    return {"good": good, "good_pub": good_pub, "bad": bad}


@pytest.fixture(scope="module")
def running(client, image, keys):
    """A container as the platform would start it: keys, token, a data volume, no command."""
    created = []
    volume = client.volumes.create(name=f"dockyard-imgtest-{uuid.uuid4().hex[:8]}", labels=LABEL)
    try:
        container = run_container(client, image, volume, {
            "DOCKYARD_AUTHORIZED_KEYS": "ssh-ed25519 AAAAnot-a-real-key old-key\n" + keys["good_pub"] + "\n",
            "DOCKYARD_JUPYTER_TOKEN": TOKEN,
            "DOCKYARD_TEST_MARK": "hello from the container env",
        })
        created.append(container)
        container.reload()
        ip = container.attrs["NetworkSettings"]["IPAddress"]
        assert ip, "the container has no address on the default bridge"
        yield {"container": container, "ip": ip, "volume": volume, "created": created}
    finally:
        for container in created:
            try:
                container.remove(force=True)
            except NotFound:
                pass
        volume.remove(force=True)


def ssh(ip: str, key: Path, command: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
         *extra, f"root@{ip}", command],
        capture_output=True, text=True, timeout=60,
    )


def jupyter_status(container, path: str, token: str | None) -> int:
    """JupyterLab trusts only the proxy's secret header; a ?token= is not a way in."""
    header = f"-H 'X-Dockyard-Proxy-Secret: {token}'" if token else ""
    code, out = sh(container, f"curl -s -o /dev/null -w '%{{http_code}}' {header} 'http://127.0.0.1:8888{path}'")
    return int(out) if code == 0 and out.isdigit() else 0


# --- the image ---------------------------------------------------------------------------

def test_image_labels_and_entrypoint(image):
    labels = image.labels
    assert labels["org.dockyard.framework"] == "pytorch"
    assert labels["org.dockyard.framework_version"] == "2.13.0"
    assert labels["org.dockyard.cuda"] == "none"
    assert labels["org.dockyard.python"] == "3.11"
    lock = (Path(__file__).resolve().parents[2] / "images" / "locks" / "pytorch-2.13-cpu.txt").read_text()
    assert labels["org.dockyard.lock"] == "\n".join(stack_lines(lock))
    assert labels["org.dockyard.lock_sha256"] == lock_digest(lock)
    config = image.attrs["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "-s", "--", "/usr/local/bin/dockyard-entrypoint"]
    assert config["WorkingDir"] == "/root"
    assert "/opt/venv/bin" in next(e for e in config["Env"] if e.startswith("PATH="))


def test_no_wheel_and_no_host_keys_in_any_layer(client, image):
    # The local wheel was only in the first build stage; host keys are made per container.
    history = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    assert ".whl" not in history
    out = client.containers.run(image.id, entrypoint=["sh", "-c"],
                                command=["ls /etc/ssh/ssh_host_* /tmp/dockyard 2>&1; ls /root/.cache 2>&1; true"],
                                remove=True).decode()
    assert "No such file" in out and "ssh_host_ed25519_key " not in out


# --- the running container ---------------------------------------------------------------

def test_tini_is_pid_1_and_the_default_command_sleeps(running):
    def probe():
        code, out = sh(running["container"], "cat /proc/1/comm; ps -o args= --ppid 1")
        return code == 0 and out.splitlines()[1:] == ["sleep infinity"] and out

    # tini's only child is the entrypoint, which ends by exec'ing the command.
    assert wait_for("the default command", probe, 30).splitlines()[0] == "tini"


def test_tools_are_there(running):
    code, out = sh(running["container"], "git --version && tmux -V && curl --version | head -n1 && "
                                          "command -v vi nano htop less ps && python -V && command -v python")
    assert code == 0, out
    assert "git version" in out and "tmux" in out and "Python 3.11" in out
    assert "/opt/venv/bin/python" in out
    # What a researcher reaches for first (issue: the environment at first login).
    code, out = sh(running["container"], "command -v rsync wget vim unzip zip screen less ssh scp gcc g++ make "
                                          "&& git lfs version && git config --system --get filter.lfs.process "
                                          "&& ! command -v nvtop && test -f /usr/include/python3.11/Python.h")
    assert code == 0, out
    assert "git-lfs/" in out and "git-lfs filter-process" in out
    # build-essential and python3-dev: a C extension compiles and imports.
    source = ('#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "hi"};\n'
              'PyMODINIT_FUNC PyInit_hi(void) { return PyModule_Create(&m); }\n')
    code, out = sh(running["container"], 'cd /tmp && printf "%s" "$SRC" > hi.c && gcc -shared -fPIC '
                                          '$(python3-config --includes) hi.c -o hi$(python3-config --extension-suffix) '
                                          '&& python -c "import hi; print(hi.__name__)"', env={"SRC": source})
    assert code == 0 and out.strip().endswith("hi"), out


def test_dockyard_check_reports_a_healthy_cpu_container(running):
    code, out = sh(running["container"], "dockyard-check")
    report = json.loads(out)
    assert code == 0, out
    assert report["ok"] is True
    assert report["framework"] == "pytorch"
    assert report["framework_version"].startswith("2.13.0")
    assert report["cuda"] is None and report["cudnn"] is None and report["nccl"] is None
    assert report["python"].startswith("3.11.")
    assert report["gpu_count"] == 0 and report["gpus_assigned"] == 0
    assert report["simulated"] is False
    assert report["nvidia_visible_devices"] is None
    for path in ("/", "/root/data"):
        assert 0 < report["disks"][path]["free_bytes"] <= report["disks"][path]["total_bytes"]


def test_dockyard_check_accepts_simulated_gpus(running):
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-00000000-0000-0000-0000-000000000001,GPU-00000000-0000-0000-0000-000000000002"}
    code, out = sh(running["container"], "dockyard-check", env=env)
    report = json.loads(out)
    assert code == 0, out
    assert report["ok"] is True and report["simulated"] is True
    assert report["gpus_assigned"] == 2 and report["gpu_count"] == 0


def test_data_volume_is_mounted(running):
    container = running["container"]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/root/data"]["Name"] == running["volume"].name
    code, out = sh(container, "echo kept > /root/data/probe && cat /root/data/probe")
    assert (code, out.strip()) == (0, "kept")


def test_jupyter_answers_with_the_token_only(running):
    container = running["container"]
    wait_for("JupyterLab", lambda: jupyter_status(container, "/api/status", TOKEN) == 200, 90)
    assert jupyter_status(container, "/api/status", None) == 403
    assert jupyter_status(container, "/api/status", "wrong-" + TOKEN) == 403
    assert jupyter_status(container, f"/api/status?token={TOKEN}", None) == 403  # no token login at all
    code, page = sh(container, f"curl -s -H 'X-Dockyard-Proxy-Secret: {TOKEN}' http://127.0.0.1:8888/lab")
    assert code == 0 and "JupyterLab" in page and TOKEN not in page  # the secret is never in a page
    code, out = sh(container, f"curl -s -H 'X-Dockyard-Proxy-Secret: {TOKEN}' http://127.0.0.1:8888/api/status")
    assert code == 0 and "started" in json.loads(out)
    # Terminals are enabled (the endpoint answers 404 when they are not).
    assert jupyter_status(container, "/api/terminals", TOKEN) == 200
    # The kernel runs the image's Python with torch.
    code, out = sh(container, "/opt/venv/bin/jupyter kernelspec list --json")
    assert code == 0 and "python3" in json.loads(out)["kernelspecs"]


def test_ssh_accepts_the_key_and_refuses_others(running, keys):
    ip = running["ip"]
    result = wait_for("sshd", lambda: (r := ssh(ip, keys["good"], "echo ok")).returncode == 0 and r, 60)
    assert result.stdout.strip() == "ok"

    refused = ssh(ip, keys["bad"], "echo ok")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    no_password = ssh(ip, keys["bad"], "echo ok", "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert no_password.returncode == 255 and "Permission denied" in no_password.stderr

    # A non-login SSH command gets the image's Python and the container's environment.
    session = ssh(ip, keys["good"], "command -v python; echo \"$DOCKYARD_TEST_MARK\"; "
                                    "python -c 'import torch; print(torch.__version__)'")
    assert session.returncode == 0, session.stderr
    assert session.stdout.splitlines() == ["/opt/venv/bin/python", "hello from the container env", "2.13.0+cpu"]
    code, out = sh(running["container"], "stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys")
    assert out.split("\n")[:2] == ["700 root", "600 root"]


def test_secrets_stay_out_of_logs_and_process_lists(running):
    container = running["container"]
    wait_for("JupyterLab", lambda: jupyter_status(container, "/api/status", TOKEN) == 200, 90)
    code, out = sh(container, "cat /var/log/dockyard/*.log /etc/environment /etc/profile.d/*.sh; ps -eo args")
    assert code == 0
    assert "jupyter" in out and "sshd" in out
    assert TOKEN not in out
    assert TOKEN not in container.logs().decode(errors="replace")


def test_sshd_and_jupyter_come_back_when_killed(running):
    container = running["container"]
    wait_for("JupyterLab", lambda: jupyter_status(container, "/api/status", TOKEN) == 200, 90)
    sh(container, "pkill -x sshd; pkill -f 'jupyter-lab|jupyter lab'")
    time.sleep(2)
    wait_for("JupyterLab after a kill", lambda: jupyter_status(container, "/api/status", TOKEN) == 200, 90)
    wait_for("sshd after a kill", lambda: sh(container, "pgrep -x sshd")[0] == 0, 30)
    code, out = sh(container, "cat /var/log/dockyard/entrypoint.log")
    assert "sshd exited" in out and "jupyter exited" in out


# --- other starts ------------------------------------------------------------------------

def test_password_and_no_token_and_a_user_command(client, image, running):
    """With a password: password auth on; without a token: no JupyterLab; argv is exec'd."""
    container = run_container(client, image, running["volume"],
                              {"DOCKYARD_SSH_PASSWORD": SSH_PASSWORD, "DOCKYARD_JUPYTER_TOKEN": ""},
                              command=["sleep", "600"])
    running["created"].append(container)
    wait_for("sshd", lambda: sh(container, "pgrep -x sshd")[0] == 0, 30)
    code, out = sh(container, "ps -o args= --ppid 1; ps -eo args; cat /var/log/dockyard/*.log")
    assert "sleep 600" in out.splitlines()[0]
    assert "PasswordAuthentication=yes" in out and "PermitRootLogin=yes" in out
    assert "JupyterLab not started" in out and "jupyter" not in out.replace("JupyterLab not started", "")
    assert SSH_PASSWORD not in out
    code, shadow = sh(container, "grep '^root:' /etc/shadow | cut -d: -f2")
    assert shadow.strip().startswith("$")  # a real hash, no longer '*'
    # The key-only container does not allow passwords.
    code, out = sh(running["container"], "ps -eo args | grep '[s]shd'")
    assert "PasswordAuthentication=no" in out and "PermitRootLogin=prohibit-password" in out


def test_the_container_ends_with_the_user_command(client, image, running):
    container = run_container(client, image, running["volume"], {}, command=["sh", "-c", "exit 3"])
    running["created"].append(container)
    assert container.wait(timeout=60)["StatusCode"] == 3
