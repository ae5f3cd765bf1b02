import docker
import pytest

from tests.harness import BASE_IMAGE, Server


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
