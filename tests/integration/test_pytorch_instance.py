"""The offline PyTorch CPU image through the platform: built by `dockyard admin images
build` with progress, rented, self-tested; JupyterLab and sshd are up inside."""

import json

import pytest

from tests.harness import Server, wait_status

IMAGE = "pytorch-2.13-cpu"


@pytest.fixture(scope="module")
def torch_server(docker_client, pytorch_image):
    srv = Server().start()
    srv.add_user("ops", admin=True)
    srv.api = srv.add_user("frank")
    yield srv
    srv.close()


def test_build_then_rent_the_pytorch_cpu_image(torch_server):
    srv = torch_server
    # Docker's layer cache makes a second build on the same machine quick.
    build = srv.cli("admin", "images", "build", IMAGE, token_of="ops", timeout=1800)
    assert build.returncode == 0, build.stderr
    assert "Step 1/" in build.stdout and f"{IMAGE} ready on local" in build.stdout
    image = srv.api.get(f"/images/{IMAGE}").json()
    assert image["status"] == "ready" and image["size_bytes"] > 0 and image["digest"].startswith("sha256:")
    assert (image["framework_version"], image["python"], image["cuda"]) == ("2.13.0", "3.11", "none")

    created = srv.api.post("/instances", json={"image": IMAGE, "gpu_model": "A100-80GB", "gpu_count": 1,
                                               "name": "torchbox"}).json()
    wait_status(srv.api, created["id"], "running", timeout=120)

    # The self-test result lands on the instance and is shown by the CLI.
    checked = json.loads(srv.cli("check", "torchbox", "--json", token_of="frank").stdout)
    assert checked["ok"] is True and checked["framework_version"].startswith("2.13.0")
    assert checked["cuda"] is None and checked["simulated"] is True
    assert "/root/data" in checked["disks"]
    shown = srv.cli("show", "torchbox", token_of="frank", check=True).stdout
    assert "pytorch 2.13.0" in shown and "ok" in shown

    def inside(script: str) -> dict:
        return srv.api.post(f"/instances/{created['id']}/exec", json={"command": ["bash", "-c", script]}).json()

    # JupyterLab answers the platform's proxy secret and refuses without it.
    probe = ('for i in $(seq 60); do code=$(curl -s -o /dev/null -w "%{http_code}" '
             '-H "X-Dockyard-Proxy-Secret: $DOCKYARD_JUPYTER_TOKEN" http://127.0.0.1:8888${DOCKYARD_JUPYTER_BASE_URL}api/status); '
             '[ "$code" = 200 ] && break; sleep 1; done; echo $code; '
             'curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:8888${DOCKYARD_JUPYTER_BASE_URL}api/status')
    assert inside(probe)["output"].split() == ["200", "403"]
    # sshd accepts connections.
    assert "SSH-2.0-OpenSSH" in inside("for i in $(seq 30); do exec 3<>/dev/tcp/127.0.0.1/22 && head -c 40 <&3 "
                                       "&& break; sleep 1; done")["output"]
    # The token is the platform's secret: in no view the API gives of the instance.
    token = inside("printf %s $DOCKYARD_JUPYTER_TOKEN")["output"]
    assert len(token) >= 32
    for path in (f"/instances/{created['id']}", "/instances", f"/instances/{created['id']}/events"):
        assert token not in srv.api.get(path).text
    assert token not in srv.cli("show", "torchbox", "--json", token_of="frank").stdout
    srv.api.delete(f"/instances/{created['id']}").raise_for_status()
