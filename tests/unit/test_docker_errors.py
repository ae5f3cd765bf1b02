import requests
from docker.errors import APIError, NotFound

from dockyard.runtimes import docker_errors
from dockyard.runtimes.base import PortTaken, RuntimeError_
from dockyard.runtimes.docker_errors import engine_error


def test_a_taken_published_port_is_its_own_error_with_the_engines_words():
    for words in ("driver failed programming external connectivity on endpoint dy-x: Error starting userland "
                  "proxy: listen tcp4 0.0.0.0:22001: bind: address already in use",
                  "Bind for 0.0.0.0:22001 failed: port is already allocated"):
        error = engine_error(APIError("500 Server Error", explanation=words))
        assert isinstance(error, PortTaken) and str(error) == words


def test_any_other_refusal_is_a_plain_engine_error():
    error = engine_error(APIError("409 Client Error", explanation="container is not running"))
    assert type(error) is RuntimeError_ and str(error) == "container is not running"


def _refusal(status: int, words: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    return (NotFound if status == 404 else APIError)(f"{status} Client Error", response=response, explanation=words)


def test_a_refusal_says_what_failed_and_a_missing_container_is_gone():
    assert str(engine_error(_refusal(500, "no space left on device"), "could not read /x")) == \
        "could not read /x: no space left on device"
    assert str(engine_error(_refusal(404, "No such container: c1"), of_container=True)) == "the container is gone"
    assert str(engine_error(_refusal(404, "No such image: i1"))) == "No such image: i1"  # not about a container


def test_the_refusals_the_runtime_answers_itself_are_known_by_the_engines_words():
    assert docker_errors.network_missing(_refusal(404, "network dy-net-alice not found"))
    assert not docker_errors.network_missing(_refusal(404, "No such container: c1"))
    assert docker_errors.subnet_taken(_refusal(403, "Pool overlaps with other one on this address space"))
    assert docker_errors.rlimit_refused(_refusal(500, "OCI runtime create failed: error setting rlimit type 8: "
                                                      "operation not permitted"))
    assert docker_errors.removal_in_progress(_refusal(409, "removal of container c1 is already in progress"))
    assert not docker_errors.removal_in_progress(_refusal(500, "removal of container c1 is already in progress"))
    assert not any(check(_refusal(409, "container is not running")) for check in (
        docker_errors.network_missing, docker_errors.subnet_taken, docker_errors.rlimit_refused,
        docker_errors.removal_in_progress))
