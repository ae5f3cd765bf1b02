import os
import time
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from dockyard.core.catalog import find, load_catalog
from dockyard.runtimes.image_build import build_image, recipe_dir
from tests.harness import BASE_IMAGE, HOST_CA_BUNDLE, Server, resolve_localhost_subdomains

resolve_localhost_subdomains()

PYTORCH_ENTRY = "pytorch-2.13-cpu"


@pytest.fixture(scope="session")
def docker_client():
    client = docker.from_env()
    client.images.get(BASE_IMAGE)  # built by scripts/install.sh
    return client


@pytest.fixture(scope="module")
def server(docker_client):
    """A running Dockyard with an admin (who registered the base image) and two users."""
    srv = Server().start()
    admin = srv.add_user("root-admin", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.admin = admin
    srv.alice = srv.add_user("alice")
    srv.bob = srv.add_user("bob")
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def pytorch_image(docker_client):
    """The offline PyTorch CPU image, built once per machine (Docker keeps it);
    DOCKYARD_REBUILD_IMAGES=1 rebuilds it after a change to the recipe."""
    entry = find(load_catalog(), PYTORCH_ENTRY)
    try:
        docker_client.images.get(entry.ref)
        if os.environ.get("DOCKYARD_REBUILD_IMAGES") != "1":
            return docker_client.images.get(entry.ref)
    except ImageNotFound:
        pass
    started = time.monotonic()
    ca = Path(HOST_CA_BUNDLE)
    built = build_image(docker.from_env(timeout=600), entry, recipe_dir(), ca if ca.is_file() else None,
                        lambda line: print(line, flush=True))
    print(f"built {built.ref} in {time.monotonic() - started:.0f} s, {built.size_bytes} bytes")
    return docker_client.images.get(entry.ref)


# Modules whose subject is the database (transactions, constraints, concurrent writers,
# recovery after a kill, the queue's row locks, the ledger) run on SQLite and again on
# PostgreSQL. Everything else is about the engine, the disks, other nodes or the browser and
# runs once, on SQLite, so the suite stays inside CI's time (a module that starts to depend
# on the database goes here). Volumes, migrations between nodes, lost and several nodes, the
# lifecycle and the activity rules left this set: 11 of its 22 minutes on PostgreSQL went to
# loop disks, engine copies and waits for idleness, none of it a database question.
BOTH_DATABASES = {
    "test_billing_ledger", "test_autorelease", "test_migrations", "test_security", "test_queue",  # unit and
    "test_api_access", "test_bad_input", "test_billing", "test_concurrency", "test_crash_recovery",  # integration
    "test_idempotency", "test_gpu_sharing",
}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DOCKYARD_TEST_DB", "sqlite") == "sqlite":
        return
    kept = [item for item in items if item.module.__name__.rpartition(".")[2] in BOTH_DATABASES]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
