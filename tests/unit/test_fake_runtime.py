"""The in-memory runtime keeps the runtime contract, and its failure modes act as an
engine's would."""

import pytest

from dockyard.runtimes.base import PortTaken, RuntimeError_
from dockyard.runtimes.fake import FakeRuntime
from tests.runtime_contract import LifecycleContract, RuntimeContract

IMAGE = "dockyard/debian:bookworm"


@pytest.fixture
def runtime():
    fake = FakeRuntime()
    fake.add_image(IMAGE)
    return fake


@pytest.fixture
def image():
    return IMAGE


@pytest.fixture
def labels():
    return {"dockyard.contract": "fake"}


class TestFakeRuntime(LifecycleContract):
    def hold_port(self, runtime, port):
        runtime.taken_ports.add(port)

    def vanish(self, runtime, container_id):
        runtime.vanish(container_id)


def test_an_engine_that_is_down_answers_nothing(runtime, labels):
    runtime.down = True
    assert not runtime.alive()
    with pytest.raises(RuntimeError_, match="does not answer"):
        runtime.list(labels)
    runtime.down = False
    assert runtime.alive() and runtime.list(labels) == []


def test_failed_and_slow_starts(runtime, labels):
    spec = RuntimeContract().spec(runtime, IMAGE, labels)
    container_id = runtime.create(spec)
    runtime.fail_starts = 1
    with pytest.raises(RuntimeError_) as refused:
        runtime.start(container_id)
    assert not isinstance(refused.value, PortTaken) and not runtime.inspect(container_id).running
    runtime.start_delay_s = 0.05
    runtime.start(container_id)  # the next start goes through, after the delay
    assert runtime.inspect(container_id).running


def test_a_container_that_exits_keeps_its_code_and_output(runtime, labels):
    container_id = runtime.create(RuntimeContract().spec(runtime, IMAGE, labels))
    runtime.start(container_id)
    runtime.exit(container_id, 3, b"one\ntwo\n")
    info = runtime.inspect(container_id)
    assert info.status == "exited" and info.exit_code == 3 and not info.running
    assert b"".join(runtime.logs(container_id, tail=1, follow=False)) == b"two\n"


def test_a_test_gives_its_own_programs(runtime, labels):
    container_id = runtime.create(RuntimeContract().spec(runtime, IMAGE, labels))
    runtime.start(container_id)
    runtime.programs["dockyard-check"] = lambda container, args: (0, b'{"ok": true}\n')
    assert runtime.exec(container_id, ["/.dockyard/dockyard-check", "--json"]) == (0, b'{"ok": true}\n')
