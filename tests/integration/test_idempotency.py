"""Idempotency-Key: a retried create, start or credit with the same key from the same
user returns the first answer and does nothing again; the CLI sends a key per request."""

import threading

from tests.harness import wait_status

CREATE = {"image": "debian-12", "gpu_count": 1}


def instances_named(api, name: str) -> list[dict]:
    return [i for i in api.get("/instances", params={"all": True}).json() if i["name"] == name]


def test_a_retried_create_returns_the_first_answer_and_creates_nothing(server):
    api = server.alice
    first = api.post("/instances", json={**CREATE, "name": "once"}, headers={"Idempotency-Key": "k-create-1"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = api.post("/instances", json={**CREATE, "name": "once"}, headers={"Idempotency-Key": "k-create-1"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(instances_named(api, "once")) == 1


def test_a_retried_start_does_not_start_twice(server):
    api = server.alice
    key = api.post("/instances", json={**CREATE, "name": "restart"}).json()["id"]
    wait_status(api, key, "running")
    api.post(f"/instances/{key}/stop").raise_for_status()
    wait_status(api, key, "stopped")
    events_before = len(api.get(f"/instances/{key}/events").json())
    first = api.post(f"/instances/{key}/start", json={}, headers={"Idempotency-Key": "k-start-1"})
    assert first.status_code == 200
    wait_status(api, key, "running")
    again = api.post(f"/instances/{key}/start", json={}, headers={"Idempotency-Key": "k-start-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    moves = [e["to_status"] for e in api.get(f"/instances/{key}/events").json()[events_before:]]
    assert moves == ["starting", "running"]


def test_a_key_reused_for_another_request_is_refused(server):
    api = server.alice
    api.post("/instances", json={**CREATE, "name": "first-use"}, headers={"Idempotency-Key": "k-reuse"}).raise_for_status()
    other = api.post("/instances", json={**CREATE, "name": "second-use"}, headers={"Idempotency-Key": "k-reuse"})
    assert other.status_code == 422 and "used for another request" in other.json()["detail"]
    assert instances_named(api, "second-use") == []


def test_a_malformed_key_is_refused_and_nothing_is_created(server):
    api = server.alice
    reply = api.post("/instances", json={**CREATE, "name": "badkey"}, headers={"Idempotency-Key": "x" * 300})
    assert reply.status_code == 400 and "Idempotency-Key" in reply.json()["detail"]
    assert instances_named(api, "badkey") == []


def test_keys_are_per_user(server):
    mine = server.alice.post("/instances", json={**CREATE, "name": "per-user"}, headers={"Idempotency-Key": "shared-k"})
    theirs = server.bob.post("/instances", json={**CREATE, "name": "per-user"}, headers={"Idempotency-Key": "shared-k"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"] and "idempotent-replayed" not in theirs.headers


def test_concurrent_requests_with_one_key_create_one_instance(server):
    api, replies = server.bob, []

    def send():
        replies.append(api.post("/instances", json={**CREATE, "name": "racing"}, headers={"Idempotency-Key": "k-race"}))

    workers = [threading.Thread(target=send) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(instances_named(api, "racing")) == 1
    # The one that ran answers 201; the others replay it or are told it has not finished.
    assert sorted({r.status_code for r in replies}) in ([201], [201, 409])
    assert {r.json()["id"] for r in replies if r.status_code == 201} == {instances_named(api, "racing")[0]["id"]}


def test_a_retried_credit_is_credited_once(server):
    body = {"user": "bob", "amount": "7"}
    recharges = lambda: server.bob.get("/billing/postings", params={"kind": "recharge"}).json()  # noqa: E731
    before = len(recharges())
    first = server.admin.post("/billing/credit", json=body, headers={"Idempotency-Key": "k-credit"})
    again = server.admin.post("/billing/credit", json=body, headers={"Idempotency-Key": "k-credit"})
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(recharges()) == before + 1
