"""Accounts and the API against a hostile tenant (docs/security.md): login limits shared by
the API and the console, scoped expiring tokens, fair share of the server's workers,
admins acting by id, secret environment values, expiring share links."""

import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.harness import Server, wait_status

pytestmark = pytest.mark.timeout(300)
IMAGE = "debian-12"
PASSWORD = "correct-horse"


@pytest.fixture(scope="module")
def srv(docker_client):
    # The front door's own address is a trusted proxy here, so each test can stand for a
    # client address of its own with X-Forwarded-For (test_forged_forwarded_for_is_ignored
    # checks the default, which trusts nobody).
    server = Server(login_failures_per_account="3", login_failures_per_address="6",
                    trusted_proxies='["127.0.0.1"]', max_waits_per_user="2", max_log_follows_per_user="1",
                    max_execs_per_user="1").start()
    server.admin = server.add_user("boss", admin=True)
    server.admin.post("/images", json={"ref": "dockyard/debian:bookworm", "name": IMAGE}).raise_for_status()
    server.alice = server.add_user("alice")
    server.bob = server.add_user("bob")
    yield server
    server.close()


def login(srv, user, password=PASSWORD, address="10.9.0.1", **body):
    return httpx.post(srv.url + "/api/v1/auth/login", json={"user": user, "password": password, **body},
                      headers={"X-Forwarded-For": address})


def console_login(srv, user, password=PASSWORD, address="10.9.0.1"):
    http = httpx.Client(base_url=srv.url, follow_redirects=False, headers={"X-Forwarded-For": address})
    form = http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return http.post("/login", data={"user": user, "password": password, "csrf": csrf})


def sql(srv, statement, **params):
    engine = create_engine(srv.env["DOCKYARD_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def running(api, **body):
    created = api.post("/instances", json={"image": IMAGE, "gpu_count": 0, **body})
    assert created.status_code == 201, created.text
    return wait_status(api, created.json()["id"], "running", timeout=120)


# ---- login limits -------------------------------------------------------------------------


def test_api_login_is_limited_per_account_and_the_console_shares_the_limit(srv):
    srv.add_user("carol")
    codes = [login(srv, "carol", "wrong-password", address=f"10.1.0.{i}").status_code for i in range(3)]
    assert codes == [401, 401, 401]
    # The account is locked for everyone, from any address, even with the right password ...
    locked = login(srv, "carol", address="10.1.0.99")
    assert locked.status_code == 429 and "too many failed sign-ins" in locked.json()["detail"]
    # ... in the console too (the same limiter) ...
    assert console_login(srv, "carol", address="10.1.0.98").status_code == 429
    # ... and other accounts are not.
    assert login(srv, "alice", address="10.1.0.99").status_code == 200


def test_api_login_is_limited_per_client_address(srv):
    address = "10.2.0.1"
    codes = [login(srv, f"nobody-{i}", "wrong-password", address=address).status_code for i in range(6)]
    assert codes == [401] * 6
    assert login(srv, "alice", address=address).status_code == 429  # this address, any account
    assert login(srv, "alice", address="10.2.0.2").status_code == 200


def test_forged_forwarded_for_is_ignored_unless_from_a_configured_proxy(docker_client):
    server = Server(login_failures_per_address="3").start()  # the default: no trusted proxy
    try:
        codes = [login(server, f"ghost-{i}", "wrong-password", address=f"10.3.0.{i}").status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]  # one client, whatever address it claims
    finally:
        server.close()


def test_login_csrf_cookie_is_secure_behind_tls(srv):
    plain = httpx.get(srv.url + "/login")
    assert "secure" not in plain.headers["set-cookie"].lower()
    tls = httpx.get(srv.url + "/login", headers={"X-Forwarded-Proto": "https"})  # a TLS terminator on this host
    assert "dockyard_login_csrf=" in tls.headers["set-cookie"] and "secure" in tls.headers["set-cookie"].lower()


# ---- tokens ---------------------------------------------------------------------------------


def test_tokens_are_listed_revocable_and_logout_ends_one(srv):
    srv.add_user("dave")
    first = login(srv, "dave", name="laptop").json()
    second = login(srv, "dave", address="10.4.0.2").json()
    api = srv.client(first["token"])
    listed = api.get("/auth/tokens").json()
    mine = {t["id"]: t for t in listed}
    assert mine[first["id"]]["name"] == "laptop" and mine[first["id"]]["current"]
    assert mine[first["id"]]["last_used_at"] is not None and mine[first["id"]]["expires_at"] is not None
    assert "token" not in mine[first["id"]]
    # Revoking another user's token is a 404, and changes nothing.
    assert srv.alice.delete(f"/auth/tokens/{second['id']}").status_code == 404
    assert api.delete(f"/auth/tokens/{second['id']}").status_code == 204
    assert srv.client(second["token"]).get("/me").status_code == 401
    assert api.post("/auth/logout").status_code == 204
    assert api.get("/me").status_code == 401


def test_cli_tokens_ls_rm_and_logout(srv):
    srv.add_user("erin")
    other = login(srv, "erin", name="ci").json()
    listed = srv.cli("tokens", "ls", token_of="erin", check=True).stdout
    assert "ci" in listed and "this one" in listed
    srv.cli("tokens", "rm", str(other["id"]), token_of="erin", check=True)
    assert srv.client(other["token"]).get("/me").status_code == 401
    gone = srv.cli("tokens", "rm", "99999", token_of="erin")
    assert gone.returncode != 0 and "token 99999 not found" in gone.stderr
    assert "logged out" in srv.cli("logout", token_of="erin", check=True).stdout
    assert srv.client(srv.tokens["erin"]).get("/me").status_code == 401


def test_expired_token_is_refused(srv):
    srv.add_user("fay")
    issued = login(srv, "fay", expires_days=1).json()
    assert srv.client(issued["token"]).get("/me").status_code == 200
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    sql(srv, "UPDATE api_tokens SET expires_at = :t WHERE id = :id", t=past, id=issued["id"])
    refused = srv.client(issued["token"]).get("/me")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]


def test_password_change_revokes_every_token_and_session(srv):
    srv.add_user("gus")
    tokens = [login(srv, "gus", address=f"10.5.0.{i}").json()["token"] for i in range(2)]
    browser = console_login(srv, "gus", address="10.5.0.9")
    assert browser.status_code == 303
    cookie = browser.cookies["dockyard_session"]
    api = srv.client(tokens[0])
    wrong = api.post("/auth/password", json={"current_password": "not-it-at-all", "new_password": "new-horse-1"})
    assert wrong.status_code == 401
    assert api.post("/auth/password", json={"current_password": PASSWORD, "new_password": "new-horse-1"}
                    ).status_code == 204
    for token in tokens:
        assert srv.client(token).get("/me").status_code == 401
    page = httpx.get(srv.url + "/instances", cookies={"dockyard_session": cookie}, follow_redirects=False)
    assert page.status_code == 303 and "/login" in page.headers["location"]
    assert login(srv, "gus", "new-horse-1", address="10.5.0.10").status_code == 200


def test_scoped_tokens_are_enforced_on_every_route(srv):
    read = srv.client(login(srv, "alice", scope="read", address="10.6.0.1").json()["token"])
    billing = srv.client(login(srv, "alice", scope="billing", address="10.6.0.2").json()["token"])
    inst = srv.client(login(srv, "alice", scope="instances", address="10.6.0.3").json()["token"])
    assert read.get("/instances").status_code == 200 and read.get("/billing/balance").status_code == 200
    refused = read.post("/instances", json={"image": IMAGE, "gpu_count": 0})
    assert refused.status_code == 403 and "scope (read)" in refused.json()["detail"]
    assert read.get("/auth/tokens").status_code == 403  # not even listing tokens
    assert billing.get("/billing/balance").status_code == 200 and billing.get("/instances").status_code == 403
    assert inst.get("/instances").status_code == 200 and inst.get("/billing/balance").status_code == 403
    assert inst.post("/auth/tokens/1", json={}).status_code in (403, 405)
    assert inst.delete("/auth/tokens/1").status_code == 403
    for api in (read, billing, inst):
        assert api.get("/me").status_code == 200


# ---- environment ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LD_PRELOAD", "NVIDIA_VISIBLE_DEVICES", "DOCKYARD_JUPYTER_TOKEN", "ld_library_path"])
def test_reserved_environment_names_are_refused(srv, name):
    for field in ("env", "secret_env"):
        refused = srv.alice.post("/instances", json={"image": IMAGE, "gpu_count": 0, field: {name: "x"}})
        assert refused.status_code == 400 and name in refused.json()["detail"], refused.text
    assert srv.alice.post("/clusters", json={"name": "c", "image": IMAGE, "nodes": 1, "gpus": 0,
                                             "env": {name: "x"}}).status_code == 400
    assert not [i for i in srv.alice.get("/instances").json() if i["name"] == "c-0"]


def test_secret_env_reaches_the_container_and_is_never_shown(srv, docker_client):
    secret = "s3cr3t-" + str(time.time_ns())
    instance = running(srv.alice, name="secretive", env={"PLAIN": "visible"}, secret_env={"HF_TOKEN": secret})
    assert instance["secret_env_names"] == ["HF_TOKEN"] and "HF_TOKEN" not in instance["env"]
    out = srv.alice.post(f"/instances/{instance['id']}/exec", json={"command": ["sh", "-c", "echo $HF_TOKEN"]}).json()
    assert out["output"].strip() == secret
    for shown in (srv.alice.get(f"/instances/{instance['id']}").text, srv.alice.get("/instances").text,
                  srv.admin.get("/instances").text, srv.cli("show", instance["id"], "--json", token_of="alice").stdout):
        assert secret not in shown
    assert secret not in srv.log()
    stored = sql(srv, "SELECT env, secret_env FROM instances WHERE id = :id", id=instance["id"])[0]
    assert secret not in str(stored.env) and secret not in stored.secret_env
    key = srv.home / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    # An admin's listing shows the names of another user's environment, not the values.
    as_admin = srv.admin.get(f"/instances/{instance['id']}").json()
    assert as_admin["env"] == {"PLAIN": "(hidden)"}
    srv.alice.delete(f"/instances/{instance['id']}").raise_for_status()


# ---- admins act by id -----------------------------------------------------------------------------


def test_admin_names_resolve_among_their_own_and_actions_on_others_are_audited(srv):
    theirs = running(srv.alice, name="train")
    mine = running(srv.admin, name="train")
    # "train" is the admin's own, never alice's.
    assert srv.admin.get("/instances/train").json()["id"] == mine["id"]
    assert srv.admin.post("/instances/train/stop").json()["id"] == mine["id"]
    assert srv.alice.get(f"/instances/{theirs['id']}").json()["status"] == "running"
    # Alice's is reached by id or as alice/train (alice:train in a URL's path).
    assert srv.admin.get("/instances/alice:train").json()["id"] == theirs["id"]
    assert srv.bob.get("/instances/alice:train").status_code == 404  # only alice and admins
    assert srv.alice.get("/instances/alice:train").json()["id"] == theirs["id"]
    shown = srv.cli("show", "alice/train", "--json", token_of="boss", check=True).stdout  # the CLI's form
    assert json.loads(shown)["id"] == theirs["id"]
    assert srv.admin.post("/instances/alice:train/exec", json={"command": ["true"]}).json()["exit_code"] == 0
    saved = srv.admin.post(f"/instances/{theirs['id']}/save", json={"name": "peek"})
    assert saved.status_code == 202, saved.text
    deadline = time.monotonic() + 120
    while srv.admin.get(f"/images/{saved.json()['name']}").json()["status"] == "saving" and time.monotonic() < deadline:
        time.sleep(1)
    srv.admin.post(f"/instances/{theirs['id']}/ports", json={"port": 7000}).raise_for_status()
    srv.admin.post(f"/instances/{theirs['id']}/ports/7000/share").raise_for_status()
    # Opening her port on her instance's host (nothing listens there: the open is what counts).
    httpx.get(srv.instance_url(theirs["id"]) + f"/instances/{theirs['id']}/ports/7000/",
              headers={"Authorization": f"Bearer {srv.tokens['boss']}"}, timeout=30)
    srv.admin.post(f"/instances/{theirs['id']}/stop").raise_for_status()
    wait_status(srv.alice, theirs["id"], "stopped")
    srv.admin.post(f"/instances/{theirs['id']}/start").raise_for_status()
    srv.admin.delete(f"/instances/{theirs['id']}").raise_for_status()
    entries = srv.admin.get("/admin/audit", params={"actor": "boss"}).json()["entries"]
    actions = {e["action"] for e in entries if e["target"].startswith("alice/train")}
    assert {"instance.exec", "instance.save", "instance.share", "instance.open", "instance.stop", "instance.start",
            "instance.release"} <= actions
    assert not [e for e in entries if mine["id"] in e["target"]]  # the admin's own: not audit entries
    srv.admin.delete(f"/instances/{mine['id']}").raise_for_status()


# ---- share links ----------------------------------------------------------------------------------


def test_share_links_expire_and_reveal_nothing(srv):
    instance = running(srv.bob, name="shares")
    srv.bob.post(f"/instances/{instance['id']}/ports", json={"port": 7000}).raise_for_status()
    shared = srv.bob.post(f"/instances/{instance['id']}/ports/7000/share").json()
    expires = datetime.fromisoformat(shared["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(timezone.utc) <= timedelta(days=7)
    link = shared["url"]  # on the instance's own host
    nonexistent = httpx.get(link.split("/shared/")[0] + "/shared/no-such-link/")
    assert nonexistent.status_code == 404
    srv.bob.post(f"/instances/{instance['id']}/stop").raise_for_status()
    wait_status(srv.bob, instance["id"], "stopped")
    stopped = httpx.get(link)
    assert stopped.status_code == 409
    assert instance["name"] not in stopped.text and instance["id"] not in stopped.text and "stopped" not in stopped.text
    sql(srv, "UPDATE service_ports SET share_expires_at = :t WHERE instance_id = :id",
        t=datetime.now(timezone.utc) - timedelta(seconds=1), id=instance["id"])
    expired = httpx.get(link)
    assert (expired.status_code, expired.text) == (nonexistent.status_code, nonexistent.text)
    srv.bob.delete(f"/instances/{instance['id']}").raise_for_status()


# ---- fair share ---------------------------------------------------------------------------------------


def test_waits_execs_and_log_follows_are_capped_per_user(srv):
    mine = running(srv.alice, name="busy", command="while true; do sleep 1; done")
    his = running(srv.bob, name="calm")
    key = mine["id"]

    def wait_long():
        srv.alice.get(f"/instances/{key}", params={"wait_for": "released", "timeout": 8})

    waiters = [threading.Thread(target=wait_long) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.5)
    third = srv.alice.get(f"/instances/{key}", params={"wait_for": "released", "timeout": 8})
    assert third.status_code == 429 and "max_waits_per_user" in third.json()["detail"]
    # Bob is not held back by alice's waits.
    assert srv.bob.get(f"/instances/{his['id']}", params={"wait_for": "released", "timeout": 1}).status_code == 200
    for waiter in waiters:
        waiter.join()

    slow = threading.Thread(target=lambda: srv.alice.post(f"/instances/{key}/exec",
                                                          json={"command": ["sleep", "4"]}))
    slow.start()
    time.sleep(1.5)
    second = srv.alice.post(f"/instances/{key}/exec", json={"command": ["true"]})
    assert second.status_code == 429 and "max_execs_per_user" in second.json()["detail"]
    assert srv.bob.post(f"/instances/{his['id']}/exec", json={"command": ["true"]}).json()["exit_code"] == 0
    slow.join()
    assert srv.alice.post(f"/instances/{key}/exec", json={"command": ["true"]}).status_code == 200
    # A streamed exec keeps its place while it streams; a client that leaves gives it back.
    with srv.alice.stream("POST", f"/instances/{key}/exec",
                          json={"command": ["sh", "-c", "echo go; sleep 60"], "stream": True}) as streamed:
        assert streamed.status_code == 200 and "go" in next(streamed.iter_lines())
        refused = srv.alice.post(f"/instances/{key}/exec", json={"command": ["true"]})
        assert refused.status_code == 429 and "max_execs_per_user" in refused.json()["detail"]
    deadline = time.monotonic() + 10
    while (again := srv.alice.post(f"/instances/{key}/exec", json={"command": ["true"]})).status_code == 429:
        assert time.monotonic() < deadline, "the stream's place did not come back when its client left"
        time.sleep(0.3)
    assert again.status_code == 200

    with srv.alice.stream("GET", f"/instances/{key}/logs", params={"follow": True}) as first:
        assert first.status_code == 200
        again = srv.alice.get(f"/instances/{key}/logs", params={"follow": True})
        assert again.status_code == 429 and "max_log_follows_per_user" in again.json()["detail"]
    # The client left: its place is given back (the follow of a silent container too).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with srv.alice.stream("GET", f"/instances/{key}/logs", params={"follow": True}) as follow:
            if follow.status_code == 200:
                break
        time.sleep(0.3)
    assert follow.status_code == 200
    for api, instance in ((srv.alice, mine), (srv.bob, his)):
        api.delete(f"/instances/{instance['id']}").raise_for_status()


# ---- small ones ------------------------------------------------------------------------------------------


def test_huge_integers_get_a_4xx(srv):
    huge = 10**30
    for method, path, body in (("POST", "/instances", {"image": IMAGE, "gpu_count": huge}),
                               ("POST", "/instances/x/ports", {"port": huge}),
                               ("DELETE", f"/auth/tokens/{huge}", None),
                               ("DELETE", f"/instances/x/ports/{huge}", None),
                               ("PATCH", "/instances/x", {"auto_stop_idle_minutes": huge})):
        answer = srv.alice.request(method, path, json=body)
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)


def test_console_secret_environment_field(srv):
    http = httpx.Client(base_url=srv.url, follow_redirects=False, headers={"X-Forwarded-For": "10.7.0.1"})
    form = http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert http.post("/login", data={"user": "bob", "password": PASSWORD, "csrf": csrf}).status_code == 303
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', http.get("/create").text).group(1)
    base = {"csrf": csrf, "image": IMAGE, "gpu_count": "0", "data_disk_gb": "1", "name": "quiet"}
    bad = http.post("/create", data={**base, "secret_env": "no equals sign"})
    assert bad.status_code == 400 and "line 1: write NAME=VALUE" in bad.text
    reserved = http.post("/create", data={**base, "secret_env": "LD_PRELOAD=/tmp/x.so"})
    assert reserved.status_code == 400 and "LD_PRELOAD is reserved" in reserved.text and "/tmp/x.so" not in reserved.text
    secret = "console-" + str(time.time_ns())
    assert http.post("/create", data={**base, "secret_env": f"API_KEY={secret}\n"}).status_code == 303
    (created,) = [i for i in srv.bob.get("/instances").json() if i["name"] == "quiet"]
    assert created["secret_env_names"] == ["API_KEY"]
    wait_status(srv.bob, created["id"], "running", timeout=120)
    shown = srv.bob.post(f"/instances/{created['id']}/exec", json={"command": ["sh", "-c", "echo $API_KEY"]}).json()
    assert shown["output"].strip() == secret
    assert secret not in http.get(f"/instances/{created['id']}").text and secret not in http.get("/instances").text
    srv.bob.delete(f"/instances/{created['id']}").raise_for_status()
