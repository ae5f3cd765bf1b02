"""Authentication and ownership: users see and act on only their own instances."""

import httpx

from tests.harness import wait_status


def test_every_call_needs_a_valid_token(server):
    anonymous = server.client()
    for method, path in [("GET", "/gpus"), ("GET", "/instances"), ("POST", "/instances"), ("GET", "/images"),
                         ("GET", "/me"), ("DELETE", "/instances/x")]:
        response = anonymous.request(method, path)
        assert response.status_code == 401, (method, path)
        assert "authentication required" in response.json()["detail"]
    assert server.client("dy_not-a-real-token").get("/instances").status_code == 401


def test_login_checks_the_password_and_cli_login_saves_a_token(server):
    wrong = httpx.post(server.url + "/api/v1/auth/login", json={"user": "alice", "password": "nope-nope"})
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.json()["detail"]
    unknown = httpx.post(server.url + "/api/v1/auth/login", json={"user": "nobody", "password": "x"})
    assert unknown.status_code == 401

    login = server.cli("login", "--url", server.url, "--user", "alice", "--password-stdin", input="correct-horse\n")
    assert login.returncode == 0, login.stderr
    credentials = server.home / "cli-config" / "dockyard" / "credentials.json"
    assert credentials.stat().st_mode & 0o077 == 0  # the token is readable by its owner only
    env_free = server.cli("ls", "--json")  # no DOCKYARD_TOKEN: uses the saved one
    assert env_free.returncode == 0, env_free.stderr
    bad = server.cli("login", "--url", server.url, "--user", "alice", "--password-stdin", input="wrong-pass\n")
    assert bad.returncode == 1 and bad.stderr.startswith("error: wrong user name or password")


def test_other_users_instances_answer_404_everywhere(server):
    alice, bob = server.alice, server.bob
    mine = alice.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "private"}).json()
    wait_status(alice, mine["id"], "running")
    for key in (mine["id"], "private"):
        for method, path, body in [
            ("GET", f"/instances/{key}", None),
            ("GET", f"/instances/{key}/events", None),
            ("GET", f"/instances/{key}/logs", None),
            ("POST", f"/instances/{key}/exec", {"command": ["true"]}),
            ("POST", f"/instances/{key}/save", {"name": "stolen"}),
            ("POST", f"/instances/{key}/check", None),
            ("POST", f"/instances/{key}/stop", None),
            ("POST", f"/instances/{key}/start", None),
            ("DELETE", f"/instances/{key}", None),
        ]:
            response = bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    assert mine["id"] not in [i["id"] for i in bob.get("/instances").json()]
    assert server.cli("exec", mine["id"], "--", "true", token_of="bob").returncode == 1
    assert alice.get(f"/instances/{mine['id']}").json()["status"] == "running"

    # Admins see everyone's.
    assert mine["id"] in [i["id"] for i in server.admin.get("/instances").json()]
    alice.delete(f"/instances/{mine['id']}").raise_for_status()


def test_only_admins_register_images(server):
    response = server.alice.post("/images", json={"ref": "dockyard/debian:bookworm", "name": "mine"})
    assert response.status_code == 403
    missing = server.admin.post("/images", json={"ref": "no-such/image:1", "name": "ghost"})
    assert missing.status_code == 400 and "no-such/image:1" in missing.json()["detail"]
    taken = server.admin.post("/images", json={"ref": "dockyard/debian:bookworm", "name": "debian-12"})
    assert taken.status_code == 409
    registered = [i["name"] for i in server.alice.get("/images").json() if i["kind"] == "registered"]
    assert registered == ["debian-12"]
    assert server.alice.get("/nodes").status_code == 403
    assert server.admin.get("/nodes").json()[0]["name"] == "local"


def test_openapi_is_published(server):
    spec = httpx.get(server.url + "/api/v1/openapi.json").json()
    assert "/api/v1/instances" in spec["paths"]


def test_admin_create_user_on_the_server_machine_makes_a_user_who_can_log_in(server):
    made = server.cli("admin", "create-user", "carol", "--password-stdin", input="long-enough-pw\n")
    assert made.returncode == 0 and "created user carol" in made.stdout, made.stderr
    login = httpx.post(server.url + "/api/v1/auth/login", json={"user": "carol", "password": "long-enough-pw"})
    assert login.status_code == 200, login.text
    again = server.cli("admin", "create-user", "carol", "--password-stdin", input="another-pw-1\n")
    assert again.returncode == 1 and again.stderr.strip() == "error: user 'carol' already exists"
    generated = server.cli("admin", "create-user", "dave", "--admin")  # no terminal: a password is made
    assert generated.returncode == 0, generated.stderr
    password = generated.stdout.split("password (shown once): ")[1].split()[0]
    token = httpx.post(server.url + "/api/v1/auth/login", json={"user": "dave", "password": password}).json()["token"]
    audit = httpx.get(server.url + "/api/v1/admin/audit", headers={"Authorization": f"Bearer {token}"}).json()
    assert {("user.create", "carol"), ("user.create", "dave")} <= {(e["action"], e["target"]) for e in audit["entries"]}
