from docker.errors import APIError

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
