"""Logic of the account and API defences (docs/security.md): limiters, the login guard,
token scopes, fair share, client addresses, read transactions, reserved names."""

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from dockyard.core.addresses import client_address
from dockyard.config import Settings
from dockyard.core import scopes
from dockyard.core.errors import TooManyRequests, Unauthorized
from dockyard.core.limits import BoundedDict, FailureWindow
from dockyard.core.validation import reserved_env_name
from dockyard.db.migrate import upgrade
from dockyard.db.models import User
from dockyard.db.session import ReadOnlySessionError, make_engine, make_read_session_factory, make_session_factory
from dockyard.services import users
from dockyard.services.fair_share import FairShare
from dockyard.services.login_guard import LoginGuard
from dockyard.services.secret_env import SecretBox


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# ---- limiters ------------------------------------------------------------------------------


def test_failure_window_blocks_after_the_limit_and_slides():
    clock = Clock()
    window = FailureWindow(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert window.retry_after("k") == 0
        window.record("k")
        clock.now += 1
    assert window.retry_after("k") == pytest.approx(57)
    assert window.retry_after("other") == 0
    clock.now += 58  # the first failure ages out
    assert window.retry_after("k") == 0


def test_failure_window_forgets_aged_keys_and_stays_bounded():
    clock = Clock()
    window = FailureWindow(limit=2, window_s=10, max_keys=100, clock=clock)
    for i in range(10_000):
        window.record(f"name-{i}")
    assert len(window) == 100
    clock.now += 11
    window.retry_after("name-9999")
    assert "name-9999" not in window._events
    window.forget("name-9998")
    assert "name-9998" not in window._events


def test_bounded_dict_drops_the_least_recently_set():
    bounded = BoundedDict(2)
    bounded["a"], bounded["b"] = 1, 2
    bounded["a"] = 3
    bounded["c"] = 4
    assert dict(bounded) == {"a": 3, "c": 4}


# ---- login guard ---------------------------------------------------------------------------------


@pytest.fixture
def db_factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    yield make_session_factory(engine), make_read_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sessions(db_factory):
    """Read sessions (as the sign-ins use) over a database with alice in it."""
    writes, reads = db_factory
    with writes.begin() as db:
        users.create_user(db, "alice", "correct-horse")
    return reads


def test_unknown_names_cost_a_hash_too(sessions, monkeypatch):
    """No user-name enumeration by timing: an unknown name costs one verification of a hash
    with the same argon2 parameters as a real user's, as a wrong password does (counted, not
    timed: a timed test fails on a busy machine)."""
    from argon2 import extract_parameters

    verified = []

    class Spy:  # PasswordHasher has slots: wrap it
        def verify(self, hash, password):
            verified.append(hash)
            return real.verify(hash, password)

        def __getattr__(self, name):
            return getattr(real, name)

    real = users._hasher
    monkeypatch.setattr(users, "_hasher", Spy())
    for name in ("alice", "nobody-here"):
        with sessions.begin() as db, pytest.raises(Unauthorized):
            users.check_password(db, name, "wrong-password")
    known, unknown = verified
    assert known != unknown and extract_parameters(unknown) == extract_parameters(known)


def test_login_guard_limits_accounts_and_addresses(sessions):
    guard = LoginGuard(Settings(login_failures_per_account=2, login_failures_per_address=3))
    with sessions.begin() as db:
        for address in ("1.1.1.1", "2.2.2.2"):
            with pytest.raises(Unauthorized):
                guard.check(db, "alice", "wrong-password", address)
        with pytest.raises(TooManyRequests):  # the right password, from a third address
            guard.check(db, "alice", "correct-horse", "3.3.3.3")
        for name in ("x1", "x2", "x3"):
            with pytest.raises(Unauthorized):
                guard.check(db, name, "wrong-password", "4.4.4.4")
        with pytest.raises(TooManyRequests):
            guard.check(db, "x4", "wrong-password", "4.4.4.4")


def test_login_guard_caps_concurrent_hashes(sessions, monkeypatch):
    guard = LoginGuard(Settings(login_concurrent_hashes=2, login_failures_per_address=1000,
                                login_failures_per_account=1000))
    inside, most = 0, 0
    lock = threading.Lock()
    real = users._hasher

    def counting_verify(hash_, password):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            return real.verify(hash_, password)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(users, "_hasher", SimpleNamespace(verify=counting_verify, hash=real.hash))

    def attempt(i):
        with sessions.begin() as db:
            try:
                guard.check(db, f"user-{i}", "wrong-password", f"10.0.0.{i}")
            except Unauthorized:
                pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 2


# ---- scopes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope,method,tags,path,allowed", [
    ("all", "DELETE", ["instances"], "/instances/{key}", True),
    ("read", "GET", ["billing"], "/billing/balance", True),
    ("read", "POST", ["instances"], "/instances", False),
    ("read", "GET", ["auth"], "/auth/tokens", False),
    ("instances", "POST", ["instances"], "/instances", True),
    ("instances", "GET", ["billing"], "/billing/balance", False),
    ("instances", "POST", ["auth"], "/auth/password", False),
    ("billing", "GET", ["billing"], "/billing/statement", True),
    ("billing", "GET", ["instances"], "/instances", False),
    ("billing", "GET", ["auth"], "/me", True),
    ("read", "POST", ["auth"], "/auth/logout", True),
])
def test_scopes(scope, method, tags, path, allowed):
    assert scopes.allows(scope, method, tags, path) is allowed


def test_only_full_and_instance_tokens_open_instances():
    assert [s for s in scopes.SCOPES if scopes.opens_instances(s)] == ["all", "instances"]


# ---- fair share --------------------------------------------------------------------------------------


def test_fair_share_caps_each_user_apart():
    share = FairShare(Settings(max_execs_per_user=2))
    alice, bob = SimpleNamespace(id=1), SimpleNamespace(id=2)
    with share.place(alice, "exec"), share.place(alice, "exec"):
        with pytest.raises(TooManyRequests, match="max_execs_per_user"):
            with share.place(alice, "exec"):
                pass
        with share.place(bob, "exec"):
            assert share.held(bob, "exec") == 1
    assert share.held(alice, "exec") == 0 and share._held == {}


def test_a_stream_gives_its_place_back_when_closed_early():
    share = FairShare(Settings(max_log_follows_per_user=1))
    closed = []

    async def chunks():
        try:
            for chunk in (b"a", b"b", b"c"):
                yield chunk
        finally:
            closed.append(True)

    async def read_one():
        with share.place(7, "logs") as place:
            stream = place.kept(chunks())
        with pytest.raises(TooManyRequests):  # the stream holds the place after the `with`
            share.place(7, "logs")
        first = await stream.__anext__()
        await stream.aclose()  # the client left
        return first

    assert asyncio.run(read_one()) == b"a"
    assert closed == [True] and share.held(7, "logs") == 0


def test_a_stream_dropped_unread_gives_its_place_back():
    share = FairShare(Settings(max_execs_per_user=1))

    async def chunks():
        yield b"never read"

    with share.place(7, "exec") as place:
        stream = place.kept(chunks())
    assert share.held(7, "exec") == 1
    del stream  # the client left before the answer began
    assert share.held(7, "exec") == 0
    with share.place(7, "exec"):
        with pytest.raises(TooManyRequests):
            share.place(7, "exec")
    assert share._held == {}


# ---- client address -------------------------------------------------------------------------------------


def request(forwarded_for=None, peer="127.0.0.1", trusted=()):
    settings = SimpleNamespace(trusted_proxies=list(trusted))
    app = SimpleNamespace(state=SimpleNamespace(platform=SimpleNamespace(settings=settings)))
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return SimpleNamespace(app=app, headers=headers, client=SimpleNamespace(host=peer))


def test_client_address_believes_only_configured_proxies():
    assert client_address(request()) == "127.0.0.1"
    # The front door appends the peer it saw; a claim before it is ignored by default ...
    assert client_address(request("6.6.6.6, 127.0.0.1")) == "127.0.0.1"
    # ... and followed through the trusted proxies, no further.
    assert client_address(request("6.6.6.6, 1.2.3.4, 127.0.0.1", trusted=["127.0.0.0/8"])) == "1.2.3.4"
    assert client_address(request("6.6.6.6, 10.0.0.7, 127.0.0.1", trusted=["127.0.0.1", "10.0.0.0/8"])) == "6.6.6.6"
    assert client_address(request("not-an-ip, 127.0.0.1", trusted=["127.0.0.1"])) == "not-an-ip"


def test_bad_trusted_proxy_is_refused_at_start():
    with pytest.raises(ValueError, match="not-a-net"):
        Settings(trusted_proxies=["not-a-net"])


# ---- read transactions ------------------------------------------------------------------------------------


def test_reads_do_not_wait_for_the_write_lock(db_factory):
    writes, reads = db_factory
    with writes.begin() as writer:
        writer.execute(text("UPDATE users SET is_admin = is_admin"))  # the write lock, held
        started = time.monotonic()
        with reads.begin() as reader:
            assert reader.scalars(select(User.name)).all() == []
        assert time.monotonic() - started < 1  # an IMMEDIATE begin would wait up to 30 s


def test_read_sessions_refuse_to_write(db_factory):
    _writes, reads = db_factory
    with pytest.raises(ReadOnlySessionError):
        with reads.begin() as db:
            db.add(User(name="x", password_hash="-"))


# ---- names and secrets --------------------------------------------------------------------------------------


def test_reserved_environment_names():
    assert reserved_env_name(["HOME", "LD_PRELOAD"]) == "LD_PRELOAD"
    assert reserved_env_name(["nvidia_driver_capabilities"]) == "nvidia_driver_capabilities"
    assert reserved_env_name(["DOCKYARD_INSTANCE_ID"]) == "DOCKYARD_INSTANCE_ID"
    assert reserved_env_name(["HF_TOKEN", "PATH", "CUDA_VISIBLE_DEVICES"]) is None


def test_secret_box_seals_with_a_private_key(tmp_path):
    box = SecretBox(tmp_path)
    sealed = box.seal({"HF_TOKEN": "hf_abc"})
    assert "hf_abc" not in sealed and box.open(sealed) == {"HF_TOKEN": "hf_abc"}
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert SecretBox(tmp_path).open(sealed) == {"HF_TOKEN": "hf_abc"}  # the same key next start
    assert box.seal({}) is None and box.open(None) == {}
