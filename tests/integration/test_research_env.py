"""What a researcher finds at first login in an instance of the CPU image: the tools
(rsync over `dockyard ssh-config`), the Python stack, TensorBoard through the port path,
and the site's package mirrors in every new instance. The tiny package index is served
from the user's first instance: instances reach their owner's other instances, but not
the host."""

import base64
import datetime
import hashlib
import html.parser
import io
import json
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, wait_status
from tests.integration.test_ssh import keypair, wait_for_sshd

IMAGE = "pytorch-2.13-cpu"
UNREACHABLE_APT = "http://127.0.0.1:9/debian"  # nothing listens on the discard port
UNREACHABLE_PIP = "http://127.0.0.1:9/simple/"


# ---- a tiny package index the instances can reach ----------------------------------------------


def tiny_wheel(folder: Path) -> Path:
    """dockyard-hello 0.1.0, a pure-Python wheel made by hand (zip + dist-info + RECORD)."""
    info = "dockyard_hello-0.1.0.dist-info"
    files = {
        "dockyard_hello/__init__.py": b"GREETING = 'hello from the mirror'\n",
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: dockyard-hello\nVersion: 0.1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dockyard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "dockyard_hello-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def index_archive(root: Path) -> bytes:
    """A PEP 503 simple index of that one wheel, as a tar.gz to unpack where it is served."""
    root.mkdir(parents=True)
    wheel = tiny_wheel(root)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = root / "simple" / "dockyard-hello"
    page.mkdir(parents=True)
    (page / "index.html").write_text(f'<a href="../../{wheel.name}#sha256={digest}">{wheel.name}</a>\n')
    (root / "simple" / "index.html").write_text('<a href="dockyard-hello/">dockyard-hello</a>\n')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=".")
    return buffer.getvalue()


def throwaway_ca() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dockyard test mirror CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---- one instance, made after the mirrors are set ----------------------------------------------


@pytest.fixture(scope="module")
def env(docker_client, pytorch_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("research")
    srv = Server().start()
    srv.add_user("ops", admin=True)
    srv.api = srv.add_user("rita")
    srv.tmp, srv.ca = tmp, throwaway_ca()
    (tmp / "ca.pem").write_text(srv.ca)
    srv.cli("admin", "mirrors", "set", "--ca-bundle", str(tmp / "ca.pem"), token_of="ops", check=True)
    srv.api.put("/mirrors", json={"apt_mirror_url": UNREACHABLE_APT, "pip_index_url": UNREACHABLE_PIP}).raise_for_status()
    srv.key = keypair(tmp, "rita")
    srv.api.post("/keys", json={"name": "rita", "public_key": srv.key.with_suffix(".pub").read_text()}).raise_for_status()
    created = srv.api.post("/instances", json={"image": IMAGE, "gpu_count": 1, "name": "box"}).json()
    srv.instance = wait_status(srv.api, created["id"], "running", timeout=180)
    yield srv
    srv.close()


def inside(srv, script: str, instance: dict | None = None, timeout: float = 300) -> tuple[int, str]:
    key = (instance or srv.instance)["id"]
    done = srv.api.post(f"/instances/{key}/exec", json={"command": ["bash", "-lc", script]}, timeout=timeout).json()
    return done["exit_code"], done["output"]


def test_the_python_stack_imports(env):
    code, out = inside(env, "python -c 'import pandas, matplotlib, sklearn, tensorboard, scipy, tqdm, ipywidgets; "
                            "import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.savefig(\"/tmp/p.png\"); "
                            "print(pandas.__version__, sklearn.__version__, tensorboard.__version__)'")
    assert code == 0, out
    image = env.api.get(f"/images/{IMAGE}").json()
    assert out.split()[-3:] == [image["packages"]["pandas"], image["packages"]["scikit-learn"],
                                image["packages"]["tensorboard"]]


def test_images_show_lists_the_locked_stack(env):
    shown = env.cli("images", "show", IMAGE, token_of="rita", check=True).stdout
    image = env.api.get(f"/images/{IMAGE}").json()
    assert f"pandas {image['packages']['pandas']}" in shown and "tensorboard" in shown
    assert len(image["packages"]) > 100 and len(image["stack_lock_sha256"]) == 64
    lock = (Path(__file__).resolve().parents[2] / "images" / "locks" / f"{IMAGE}.txt").read_text()
    assert f"numpy=={image['packages']['numpy']}" in lock


def test_rsync_over_ssh_config_copies_a_folder_both_ways(env):
    data = env.tmp / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    config = env.tmp / "ssh_config"
    env.cli("ssh-config", "--path", str(config), token_of="rita", check=True)
    wait_for_sshd(env.instance, env.key)
    shell = f"ssh -F {config} -i {env.key} -o BatchMode=yes -o UserKnownHostsFile=/dev/null"
    up = subprocess.run(["rsync", "-az", "-e", shell, f"{data}/", "box:/root/data/copied/"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    code, out = inside(env, "sha256sum /root/data/copied/a.txt /root/data/copied/sub/b.bin "
                            "&& echo changed > /root/data/copied/sub/new.txt")
    assert code == 0 and hashlib.sha256(b"alpha\n").hexdigest() in out
    back = env.tmp / "back"
    down = subprocess.run(["rsync", "-az", "-e", shell, "box:/root/data/copied/", f"{back}/"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert (back / "sub" / "b.bin").read_bytes() == (data / "sub" / "b.bin").read_bytes()
    assert (back / "sub" / "new.txt").read_text() == "changed\n"


def test_a_new_instance_pip_installs_from_the_site_mirror(env):
    # The index, served from the first instance on its network.
    archive = base64.b64encode(index_archive(env.tmp / "index")).decode()
    code, out = inside(env, f"mkdir -p /root/index && echo {archive} | base64 -d | tar -xz -C /root/index && "
                            "(nohup python -m http.server 8000 --directory /root/index >/tmp/index.log 2>&1 &) && "
                            "hostname -I")
    assert code == 0, out
    url = f"http://{out.split()[0]}:8000/simple/"
    set_site = env.cli("admin", "mirrors", "set", "--pip-index", url, "--ca-bundle", str(env.tmp / "ca.pem"),
                       token_of="ops")
    assert set_site.returncode == 0, set_site.stderr
    env.api.put("/mirrors", json={"apt_mirror_url": UNREACHABLE_APT}).raise_for_status()  # the site's index only
    fresh = env.api.post("/instances", json={"image": IMAGE, "gpu_count": 1, "name": "fresh"}).json()
    fresh = wait_status(env.api, fresh["id"], "running", timeout=180)
    code, conf = inside(env, "cat /etc/pip.conf", fresh)
    assert f"index-url = {url}" in conf and "trusted-host" in conf
    code, out = inside(env, "pip install --no-cache-dir dockyard-hello && python -c "
                            "'import dockyard_hello; print(dockyard_hello.GREETING)'", fresh)
    assert code == 0, out
    assert "hello from the mirror" in out
    assert "GET /simple/dockyard-hello/" in inside(env, "cat /tmp/index.log")[1]
    checked = json.loads(env.cli("check", "fresh", "--json", token_of="rita", timeout=300).stdout)
    assert {m["url"]: m["reachable"] for m in checked["mirrors"]}[url] is True
    env.api.delete(f"/instances/{fresh['id']}").raise_for_status()


def test_the_other_mirror_settings_are_written(env):
    code, out = inside(env, "cat /etc/apt/sources.list.d/dockyard-user.list; "
                            "grep -c 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates/dockyard-mirrors.crt")
    assert f"deb {UNREACHABLE_APT} bookworm main" in out and out.split()[-1] == "1"
    # The entrypoint added the extra CA to the system bundle that pip.conf and .condarc name.
    pem_body = "".join(env.ca.strip().splitlines()[1:-1])
    code, bundle = inside(env, "tr -d '\\n' < /etc/ssl/certs/ca-certificates.crt")
    assert pem_body in bundle
    events = env.api.get(f"/instances/{env.instance['id']}/events").json()
    assert any(e["cause"] == "package mirror settings written" for e in events)


def test_dockyard_check_lists_tools_libraries_and_mirrors(env):
    checked = json.loads(env.cli("check", "box", "--json", token_of="rita", timeout=300).stdout)
    assert checked["ok"] is True, checked["errors"]
    for tool in ("rsync", "wget", "vim", "unzip", "zip", "screen", "less", "ssh", "git", "git-lfs", "gcc", "make"):
        assert checked["tools"][tool]["path"], tool
    assert checked["tools"]["rsync"]["version"].startswith("rsync")
    assert "git-lfs/" in checked["tools"]["git-lfs"]["version"]
    assert {"pandas", "matplotlib", "sklearn", "tensorboard", "numpy"} <= set(checked["libraries"])
    assert all(lib["version"] and "error" not in lib for lib in checked["libraries"].values())
    # The unreachable pip index and apt mirror did not keep the instance from starting; the check says so.
    assert [(m["url"], m["reachable"]) for m in checked["mirrors"]] == [(UNREACHABLE_PIP, False), (UNREACHABLE_APT, False)]
    for url in (UNREACHABLE_PIP, UNREACHABLE_APT):
        assert any(url in w and "unreachable" in w for w in checked["warnings"]), url
    assert f"extra-index-url = {UNREACHABLE_PIP}" in inside(env, "cat /etc/pip.conf")[1]


def test_dockyard_check_flags_a_broken_import(env):
    init = "/opt/venv/lib/python3.11/site-packages/pandas/__init__.py"
    code, out = inside(env, f"cp {init} /tmp/pandas-init && echo 'raise ImportError(\"broken on purpose\")' > {init} "
                            f"&& dockyard-check; echo exit=$?; cp /tmp/pandas-init {init}")
    report = json.loads(out.strip().splitlines()[-2])
    assert out.strip().endswith("exit=1") and report["ok"] is False
    assert "error" in report["libraries"]["pandas"]
    assert any(e.startswith("import pandas failed") and "broken on purpose" in e for e in report["errors"])
    assert inside(env, "python -c 'import pandas'")[0] == 0  # put back


class _Assets(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and tag in ("script", "link") and \
                    not value.startswith(("http:", "https:", "data:", "#", "//")):
                self.found.append(value)


def _wait_ok(http: httpx.Client, url: str, tries: int = 120) -> httpx.Response:
    for _ in range(tries):
        answer = http.get(url)
        if answer.status_code == 200:
            return answer
        time.sleep(0.5)
    return answer


def _pages_assets_and_data(http: httpx.Client, base: str) -> None:
    index = _wait_ok(http, base)
    assert index.status_code == 200 and "tensorboard" in index.text.lower()
    parser = _Assets()
    parser.feed(index.text)
    assert parser.found, "TensorBoard's page names no assets"
    for asset in parser.found:
        url = asset if asset.startswith("/") else base + asset.removeprefix("./")
        assert http.get(url).status_code == 200, url
    listing = http.get(base + "data/plugins_listing")
    assert listing.status_code == 200 and "scalars" in listing.json()
    for _ in range(60):  # TensorBoard reads new event files every few seconds
        tags = http.get(base + "data/plugin/scalars/tags").json()
        if "loss" in json.dumps(tags):
            break
        time.sleep(1)
    assert "loss" in json.dumps(tags)


def test_tensorboard_answers_through_the_port_path(env):
    key = env.instance["id"]
    code, out = inside(env, (
        "python -c \"from torch.utils.tensorboard import SummaryWriter; w = SummaryWriter('/root/runs/a'); "
        "[w.add_scalar('loss', 1.0 / (i + 1), i) for i in range(5)]; w.close()\" && "
        "(nohup tensorboard --logdir /root/runs --port 6006 --bind_all >/tmp/tb.log 2>&1 &) && "
        f"(nohup tensorboard --logdir /root/runs --port 6007 --bind_all --path_prefix /instances/{key}/ports/6007 "
        ">/tmp/tb2.log 2>&1 &)"))
    assert code == 0, out
    added = env.cli("ports", "add", "box", "6006", token_of="rita", check=True).stdout
    assert f"/instances/{key}/ports/6006/" in added and "--bind_all" in added
    http = env.instance_client(key, env.tokens["rita"])  # ports are served on the instance's own host
    # TensorBoard at / inside, reached under the prefix: the proxy sends what follows it.
    _pages_assets_and_data(http, f"/instances/{key}/ports/6006/")
    # An app started with its base path gets the whole path (--keep-path).
    kept = env.cli("ports", "add", "box", "6007", "--keep-path", token_of="rita", check=True).stdout
    assert f"base path /instances/{key}/ports/6007/" in kept
    _pages_assets_and_data(http, f"/instances/{key}/ports/6007/")
    listed = env.api.get(f"/instances/{key}/ports").json()
    assert [(p["port"], p["keep_path"]) for p in listed] == [(6006, False), (6007, True)]
