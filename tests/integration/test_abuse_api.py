"""The abuse suite, API half: every route that takes an id, found in the application's
own route table (so a new route cannot be left out), tried by bob with alice's ids; and
schemathesis over the OpenAPI, every operation, as a signed-in user."""

import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from dockyard.api.app import create_app
from dockyard.config import Settings
from tests.harness import wait_status

pytestmark = pytest.mark.timeout(900)
IMAGE = "debian-12"
EXAMPLES = 8  # per operation: the suite stays within a few minutes

# Path parameters that name nothing of a user's: the test fills them as given.
NOT_IDS = {("/static/{name}", "name"): "app.js", ("/lang/{code}", "code"): "en",
           ("/console/instances/{key}/{action}", "action"): "stop"}
# A valid body where the route needs one, so the look-up (not the validation) answers.
BODIES = {"/instances/{key}/save": {"name": "stolen"}, "/instances/{key}/clone": {"name": "stolen"},
          "/instances/{key}/exec": {"command": ["true"]}, "/instances/{key}/ports": {"port": 7001},
          "/instances/{key}/autostop": {"idle": "off", "max": "off"},
          "/instances/{key}": {"auto_stop_idle_minutes": None}, "/volumes/{key}/resize": {"size_gb": 2},
          "/instances/{key}/migrate": {"node": "local"}}


def routes(tmp_path):
    """(method, path) of every route of the application: API, console and access alike."""
    app = create_app(Settings(home=tmp_path))

    def walk(found, prefix=""):
        for route in found:
            if hasattr(route, "original_router"):  # an included router, resolved lazily
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                for method in sorted(getattr(route, "methods", None) or []):
                    if method != "HEAD":
                        yield method, prefix + route.path

    return sorted(set(walk(app.router.routes)))


@pytest.fixture(scope="module")
def alices(server):
    """Something of every kind that alice owns, by the parameter names routes use."""
    alice = server.alice
    instance = alice.post("/instances", json={"image": IMAGE, "gpu_count": 0, "name": "mine"}).json()
    wait_status(alice, instance["id"], "running", timeout=120)
    alice.post(f"/instances/{instance['id']}/ports", json={"port": 7000}).raise_for_status()
    shared = alice.post(f"/instances/{instance['id']}/ports/7000/share").json()["url"]
    cluster = alice.post("/clusters", json={"name": "ring", "image": IMAGE, "nodes": 1, "gpus": 0}).json()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdyAFpYw0Y6YhDhFmjRvvz2vfpv0ZnB6QwAo6lS7A0k alice@laptop"
    alice.post("/keys", json={"name": "laptop", "public_key": key}).raise_for_status()
    image = alice.post(f"/instances/{instance['id']}/save", json={"name": "snap"}).json()["name"]
    volume = alice.post("/volumes", json={"name": "notes", "size_gb": 1}).json()
    operation = alice.get("/operations").json()[0]["id"]
    token = alice.get("/auth/tokens").json()[0]["id"]
    return {"instance": instance, "cluster": cluster, "volume": volume, "shared": shared, "image": image, "operation": operation,
            "token": token, "key": "laptop", "port": 7000}


def fill(path: str, mine: dict) -> list[str]:
    """The URLs for one route with alice's ids in it (an instance by id and as alice:name)."""
    def value(name):
        if (path.removeprefix("/api/v1"), name) in NOT_IDS:
            return [NOT_IDS[(path.removeprefix("/api/v1"), name)]]
        if name == "key":
            row = (mine["cluster"] if "/clusters/" in path else mine["volume"] if "/volumes/" in path
                   else mine["instance"])
            return [row["id"], f"alice:{row['name']}"]
        known = {"port": [str(mine["port"])], "token_id": [str(mine["token"])], "name:path": [mine["image"]],
                 "name_or_fingerprint": [mine["key"]], "name": [mine["key"]], "op_id": [mine["operation"]]}
        if name not in known:
            pytest.fail(f"route {path}: say how to fill {{{name}}} with another user's id (tests/integration/"
                        f"test_abuse_api.py), or that it names nothing of a user's (NOT_IDS)")
        return known[name]

    urls = [path]
    for name in re.findall(r"{([^}]+)}", path):
        urls = [u.replace("{" + name + "}", v, 1) for u in urls for v in value(name)]
    return urls


def console(server, user):
    http = httpx.Client(base_url=server.url, follow_redirects=False, timeout=60)
    form = http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert http.post("/login", data={"user": user, "password": "correct-horse", "csrf": csrf}).status_code == 303
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', http.get("/instances").text).group(1)
    return http, csrf


def test_every_route_that_takes_an_id_is_404_with_another_users(server, alices, tmp_path):
    http, csrf = console(server, "bob")
    bob_token = server.tokens["bob"]
    bare = httpx.Client(base_url=server.url, timeout=60)  # the API by token alone, no console cookie
    tried = []
    for method, path in routes(tmp_path):
        params = re.findall(r"{([^}]+)}", path)
        if all((path.removeprefix("/api/v1"), name) in NOT_IDS for name in params):
            continue  # no id in it (or no parameter at all)
        for url in fill(path, alices):
            api = url.startswith("/api/")
            body = BODIES.get(path.removeprefix("/api/v1"))
            if api:
                answer = bare.request(method, url, headers={"Authorization": f"Bearer {bob_token}"},
                                      json=body if method != "GET" else None)
            elif method == "GET":
                answer = http.get(url)
            else:
                answer = http.request(method, url, headers={"X-CSRF-Token": csrf},
                                      data={"csrf": csrf, **(body or {})} if not path.startswith("/console/")
                                      else None, json=body if path.startswith("/console/") else None)
            tried.append((method, url, answer.status_code))
            assert answer.status_code == 404 or (answer.status_code == 403 and "admin" in answer.text), \
                (method, url, answer.status_code, answer.text[:300])
    assert len({(m, u) for m, u, _ in tried}) > 40, tried
    # The access paths too: alice's JupyterLab and port, by bob, on the console's host (no
    # redirect to hers) and on her instance's own host with his token.
    host = server.instance_url(alices["instance"]["id"])
    for url in (f"/instances/{alices['instance']['id']}/jupyter/lab", f"/instances/{alices['instance']['id']}/ports/7000/"):
        assert http.get(url).status_code == 404
        assert httpx.get(host + url, headers={"Authorization": f"Bearer {bob_token}"}).status_code == 404
    # And nothing of alice's changed.
    alice = server.alice
    assert alice.get(f"/instances/{alices['instance']['id']}").json()["status"] == "running"
    assert [k["name"] for k in alice.get("/keys").json()] == ["laptop"]
    assert alice.get("/me").status_code == 200
    assert [p["shared"] for p in alice.get(f"/instances/{alices['instance']['id']}/ports").json()] == [True]


# ---- schemathesis --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_user(server):
    server.add_user("fuzz")
    return server


def test_every_operation_answers_without_5xx_and_as_its_schema_says(fuzz_user):
    """Each operation with generated input (a fixed seed, a few examples each): never a
    5xx, never an answer its own schema does not describe."""
    schema = schemathesis.openapi.from_url(fuzz_user.url + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    failures = []
    for operation in operations:
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def exercise(case):
            case.call_and_validate(base_url=fuzz_user.url, headers={"Authorization": f"Bearer {token(fuzz_user)}"},
                                   checks=[not_a_server_error, response_schema_conformance], timeout=30)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures shown together
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert len(operations) > 40
    assert not failures, "\n\n".join(failures)


def token(server) -> str:
    """The fuzzing user's token, afresh if a generated logout or password change ended it."""
    if httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {server.tokens['fuzz']}"}
                 ).status_code == 401:
        server.tokens["fuzz"] = httpx.post(server.url + "/api/v1/auth/login",
                                           json={"user": "fuzz", "password": "correct-horse"}).json()["token"]
    return server.tokens["fuzz"]
