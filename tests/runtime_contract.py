"""What every runtime promises the platform, as tests: run against the in-memory fake
(tests/unit/test_fake_runtime.py) and the real Docker engine
(tests/integration/test_docker_runtime_contract.py), so the fake that the logic's unit
tests stand on behaves as the engine does where the platform looks.

A module subclasses `RuntimeContract` and gives the fixtures `runtime` (fresh, its
things labelled `labels`), `image` (a reference on it with `sleep`, `cat`, `echo`, `true`
and `false`), and the hooks `hold_port` and `vanish`.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from dockyard.runtimes.base import (ContainerGone, ContainerSpec, ContainerStats, Feature, PortTaken, RuntimeError_,
                                    SwarmState)
from dockyard.runtimes.instances import ContainerInstances, Held


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RuntimeContract:
    def hold_port(self, runtime, port: int) -> None:
        """Make something other than the runtime's containers hold host port `port`."""
        raise NotImplementedError

    def vanish(self, runtime, container_id: str) -> None:
        """Remove the container behind the platform's back."""
        raise NotImplementedError

    def spec(self, runtime, image, labels, **changes) -> ContainerSpec:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        values = dict(name=name, image=image, command=["sleep", "600"], env={"GREETING": "hi"}, labels=labels,
                      hostname="contract", network=runtime.ensure_network(f"contract-{labels['dockyard.contract']}",
                                                                          labels), volumes={})
        values.update(changes)
        return ContainerSpec(**values)

    def test_a_container_is_created_started_stopped_and_removed(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        made = runtime.inspect(container_id)
        assert made.status == "created" and not made.running and made.labels == labels
        assert [c.id for c in runtime.list(labels)] == [container_id]
        runtime.start(container_id)
        running = runtime.inspect(container_id)
        assert running.running and running.ip
        runtime.start(container_id)  # starting a running container changes nothing
        assert runtime.inspect(container_id).running
        runtime.stop(container_id, timeout=1)
        assert not runtime.inspect(container_id).running
        runtime.remove(container_id)
        assert runtime.inspect(container_id) is None and runtime.list(labels) == []

    def test_missing_things_are_none_or_fine(self, runtime, image, labels):
        missing = "0" * 64
        assert runtime.inspect(missing) is None
        runtime.stop(missing, timeout=1)  # stopping or removing what is gone: done already
        runtime.remove(missing)
        runtime.remove_volume(f"contract-none-{uuid.uuid4().hex[:8]}")
        runtime.remove_image("dockyard/contract-none:missing")
        assert runtime.image_info("dockyard/contract-none:missing") is None
        assert not runtime.image_exists("dockyard/contract-none:missing")
        assert runtime.stats(missing) is None
        with pytest.raises(RuntimeError_):
            runtime.start(missing)
        with pytest.raises(RuntimeError_):
            runtime.exec(missing, ["true"])
        with pytest.raises(RuntimeError_):
            runtime.put_files(missing, "", {"a": (b"x", 0o644)}, "/tmp")
        with pytest.raises(RuntimeError_):
            runtime.logs(missing, tail=10, follow=False)

    def test_a_name_is_taken_once(self, runtime, image, labels):
        spec = self.spec(runtime, image, labels)
        runtime.create(spec)
        with pytest.raises(RuntimeError_):
            runtime.create(spec)

    def test_an_image_that_is_not_there_is_refused(self, runtime, image, labels):
        with pytest.raises(RuntimeError_):
            runtime.create(self.spec(runtime, "dockyard/contract-none:missing", labels))
        assert runtime.image_exists(image) and runtime.image_info(image).size_bytes > 0

    def test_files_go_in_by_archive_and_read_back_within_a_limit(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        runtime.start(container_id)
        runtime.put_files(container_id, "keys", {"authorized_keys": (b"ssh-ed25519 AAAA\n", 0o600)}, "/root")
        assert runtime.read_file(container_id, "/root/keys/authorized_keys") == b"ssh-ed25519 AAAA\n"
        assert runtime.read_file(container_id, "/root/keys/none") is None
        runtime.put_files(container_id, "", {"big": (b"x" * 5000, 0o644)}, "/tmp")
        assert runtime.read_file(container_id, "/tmp/big", limit=4096) is None  # over the limit: not read
        assert runtime.read_file(container_id, "/tmp/big") == b"x" * 5000
        code, output = runtime.exec(container_id, ["cat", "/root/keys/authorized_keys"])
        assert (code, output) == (0, b"ssh-ed25519 AAAA\n")

    def test_exec_answers_with_its_exit_code_within_a_deadline_and_a_size(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        with pytest.raises(RuntimeError_):
            runtime.exec(container_id, ["true"])  # not running yet
        runtime.start(container_id)
        assert runtime.exec(container_id, ["true"]) == (0, b"")
        assert runtime.exec(container_id, ["false"])[0] == 1
        assert runtime.exec(container_id, ["echo", "hello"]) == (0, b"hello\n")
        assert runtime.exec(container_id, ["contract-no-such-program"])[0] not in (0, -1)
        # Cut at the size; the command is stopped unless it ended first.
        run = runtime.exec_stream(container_id, ["echo", "x" * 1000], timeout_s=10, max_bytes=10)
        assert b"".join(run) == b"x" * 10 and run.truncated and run.exit_code in (0, None)
        code, _ = runtime.exec(container_id, ["sleep", "30"], timeout_s=1)
        assert code == -1  # stopped at its deadline
        run = runtime.exec_stream(container_id, ["echo", "streamed"], timeout_s=10, max_bytes=1024)
        assert b"".join(run) == b"streamed\n" and run.exit_code == 0 and not run.timed_out and not run.truncated
        run.close()

    def test_a_taken_host_port_is_port_taken(self, runtime, image, labels):
        port = free_port()
        self.hold_port(runtime, port)
        container_id = None
        with pytest.raises(PortTaken):
            container_id = runtime.create(self.spec(runtime, image, labels, ports={22: ("127.0.0.1", port)}))
            runtime.start(container_id)

    def test_a_vanished_container_is_gone_everywhere(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        runtime.start(container_id)
        self.vanish(runtime, container_id)
        assert runtime.inspect(container_id) is None and runtime.list(labels) == []
        runtime.stop(container_id, timeout=1)
        runtime.remove(container_id)
        with pytest.raises(RuntimeError_):
            runtime.start(container_id)

    def test_volumes_are_made_once_listed_and_kept_while_in_use(self, runtime, image, labels):
        name = f"contract-{uuid.uuid4().hex[:10]}"
        runtime.ensure_volume(name, labels)
        runtime.ensure_volume(name, labels)  # made once
        assert runtime.list_volumes(labels) == [name]
        container_id = runtime.create(self.spec(runtime, image, labels, volumes={name: "/root/data"}))
        runtime.start(container_id)
        with pytest.raises(RuntimeError_):
            runtime.remove_volume(name)  # a running container holds it
        runtime.remove(container_id)
        runtime.remove_volume(name)
        assert runtime.list_volumes(labels) == []

    def test_a_network_is_made_once(self, runtime, labels):
        name = f"contract-{uuid.uuid4().hex[:10]}"
        assert runtime.ensure_network(name, labels) == runtime.ensure_network(name, labels)

    def test_stats_only_while_running(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels, memory_bytes=256 * 1024**2))
        assert runtime.stats(container_id) is None
        runtime.start(container_id)
        reading = runtime.stats(container_id)
        assert isinstance(reading, ContainerStats) and reading.memory_limit == 256 * 1024**2
        assert runtime.system_disk_used(container_id) is not None
        runtime.stop(container_id, timeout=1)
        assert runtime.stats(container_id) is None

    def test_a_commit_keeps_the_files_as_an_image(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        runtime.start(container_id)
        runtime.put_files(container_id, "", {"kept": (b"mine\n", 0o644)}, "/root")
        tag = uuid.uuid4().hex[:10]
        runtime.commit(container_id, "dockyard/contract", tag, labels)
        ref = f"dockyard/contract:{tag}"
        try:
            assert runtime.image_exists(ref) and runtime.image_info(ref).labels["dockyard.contract"]
            assert ref in runtime.list_images(labels)
            copy = runtime.create(self.spec(runtime, ref, labels))
            runtime.start(copy)
            assert runtime.read_file(copy, "/root/kept") == b"mine\n"
            runtime.remove(copy)
        finally:
            runtime.remove_image(ref)
        assert not runtime.image_exists(ref)

    def test_a_system_disk_is_kept_as_an_image_a_new_container_starts_from(self, runtime, image, labels):
        container_id = runtime.create(self.spec(runtime, image, labels))
        runtime.start(container_id)
        runtime.put_files(container_id, "", {"work.txt": (b"epoch 3\n", 0o644)}, "/root")
        runtime.stop(container_id, timeout=1)
        tag = uuid.uuid4().hex[:10]
        kept = runtime.keep_system_disk(container_id, "dockyard/contract", tag, max_layers=1, labels=labels)
        again = None
        try:
            again = runtime.create(self.spec(runtime, kept, labels))
            runtime.start(again)
            assert runtime.read_file(again, "/root/work.txt") == b"epoch 3\n"
        finally:
            for made in (again, container_id):
                if made:
                    runtime.remove(made)
            for ref in runtime.list_images(labels):
                runtime.remove_image(ref)

    def test_a_cluster_network_has_its_subnet_and_goes_once(self, runtime, labels):
        name = f"contract-{uuid.uuid4().hex[:10]}"
        subnet = f"10.218.{uuid.uuid4().int % 250}.0/24"
        assert runtime.ensure_cluster_network(name, subnet, "bridge", labels) == name
        assert runtime.ensure_cluster_network(name, subnet, "bridge", labels) == name  # made once
        assert subnet in runtime.taken_subnets()
        assert isinstance(runtime.swarm_state(), SwarmState)
        runtime.remove_cluster_network(name)
        runtime.remove_cluster_network(name)  # gone already: fine
        assert subnet not in runtime.taken_subnets()

    def test_every_ability_is_there_or_named_missing_with_a_reason(self, runtime):
        for feature in Feature:
            why = runtime.lacks(feature)
            assert why is None or (isinstance(why, str) and runtime.node_name in why)


class LifecycleContract(RuntimeContract):
    """The lifecycle the driver asks for (runtimes/instances.py), over each engine."""

    def lifecycle(self, runtime, labels) -> tuple[ContainerInstances, str, list[Held]]:
        recorded: list[Held] = []
        instance_id = f"i{uuid.uuid4().hex[:10]}"
        engine = ContainerInstances(runtime, labels, "dockyard/contract-sysdisk", stop_timeout_s=1, max_layers=2)
        return engine, instance_id, recorded

    def instance_spec(self, runtime, image, labels, instance_id, gpus, **changes) -> ContainerSpec:
        return self.spec(runtime, image, {**labels, "dockyard.instance": instance_id, "dockyard.gpus": ",".join(gpus)},
                         name=f"contract-{instance_id}", gpu_uuids=list(gpus), **changes)

    def test_a_gpu_change_makes_the_container_again_over_the_same_system_disk(self, runtime, image, labels):
        engine, iid, recorded = self.lifecycle(runtime, labels)
        try:
            held = engine.provision(iid, f"contract-{iid}", ["GPU-b", "GPU-a"], Held(), recorded.append)
            assert held == Held() and recorded == []  # nothing there: the caller makes it
            held = engine.create(self.instance_spec(runtime, image, labels, iid, ["GPU-a", "GPU-b"]), held,
                                 recorded.append)
            assert held.container_id and held.gpus == ("GPU-a", "GPU-b") and recorded == [held]
            engine.start(held)
            runtime.put_files(held.container_id, "", {"work.txt": (b"epoch 3\n", 0o644)}, "/root")
            # The same GPUs, in any order: the same container.
            assert engine.provision(iid, f"contract-{iid}", ["GPU-b", "GPU-a"], held, recorded.append) == held
            first = held.container_id
            held = engine.provision(iid, f"contract-{iid}", ["GPU-c"], held, recorded.append)
            assert held.container_id is None and held.system_disk and recorded[-1] == held
            assert runtime.inspect(first) is None
            held = engine.create(self.instance_spec(runtime, held.system_disk, labels, iid, ["GPU-c"]), held,
                                 recorded.append)
            engine.start(held)
            assert runtime.read_file(held.container_id, "/root/work.txt") == b"epoch 3\n"
            engine.drop_old_disks(iid, held)
            assert runtime.list_images({**labels, "dockyard.instance": iid}) == [held.system_disk]
            engine.stop(held)
            assert not runtime.inspect(held.container_id).running
        finally:
            engine.destroy(iid, f"contract-{iid}", recorded[-1] if recorded else Held())
        assert runtime.list(labels) == [] and runtime.list_images({**labels, "dockyard.instance": iid}) == []
        engine.destroy(iid, f"contract-{iid}", held)  # missing is fine

    def test_a_container_made_but_not_recorded_is_adopted_with_its_gpus_else_removed(self, runtime, image, labels):
        engine, iid, recorded = self.lifecycle(runtime, labels)
        name = f"contract-{iid}"
        try:
            made = runtime.create(self.instance_spec(runtime, image, labels, iid, ["GPU-a"]))
            held = engine.provision(iid, name, ["GPU-a"], Held(), recorded.append)
            assert held == Held(made, ("GPU-a",)) and recorded == [held]
            assert engine.provision(iid, name, ["GPU-b"], Held(), recorded.append) == Held()
            assert runtime.inspect(made) is None and len(recorded) == 1  # it never ran: nothing kept
        finally:
            engine.destroy(iid, name, Held())

    def test_a_vanished_container_is_named_gone_and_a_remake_before_any_run_keeps_nothing(self, runtime, image,
                                                                                            labels):
        engine, iid, recorded = self.lifecycle(runtime, labels)
        try:
            held = engine.create(self.instance_spec(runtime, image, labels, iid, []), Held(), recorded.append)
            cleared = engine.remake(iid, held, ran_before=False, record=recorded.append)
            assert cleared == Held() and recorded[-1] == cleared and runtime.inspect(held.container_id) is None
            held = engine.create(self.instance_spec(runtime, image, labels, iid, []), Held(), recorded.append)
            engine.start(held)
            self.vanish(runtime, held.container_id)
            with pytest.raises(ContainerGone):
                engine.provision(iid, f"contract-{iid}", [], held, recorded.append)
            with pytest.raises(ContainerGone):
                engine.stop(held)
            engine.stop(Held())  # nothing held: nothing to stop
        finally:
            engine.destroy(iid, f"contract-{iid}", Held())

    def test_a_port_held_by_another_program_is_port_taken_and_a_remake_keeps_the_disk(self, runtime, image, labels):
        engine, iid, recorded = self.lifecycle(runtime, labels)
        port = free_port()
        try:
            held = engine.create(self.instance_spec(runtime, image, labels, iid, []), Held(), recorded.append)
            engine.start(held)
            runtime.put_files(held.container_id, "", {"work.txt": (b"kept\n", 0o644)}, "/root")
            engine.stop(held)
            self.hold_port(runtime, port)
            kept = engine.remake(iid, held, ran_before=True, record=recorded.append)
            assert kept.container_id is None and kept.system_disk
            moved = engine.create(self.instance_spec(runtime, kept.system_disk, labels, iid, [],
                                                     ports={22: ("127.0.0.1", port)}), kept, recorded.append)
            with pytest.raises(PortTaken):
                engine.start(moved)
            again = engine.remake(iid, moved, ran_before=True, record=recorded.append)
            moved = engine.create(self.instance_spec(runtime, again.system_disk, labels, iid, []), again,
                                  recorded.append)
            engine.start(moved)
            assert runtime.read_file(moved.container_id, "/root/work.txt") == b"kept\n"
        finally:
            engine.destroy(iid, f"contract-{iid}", recorded[-1] if recorded else Held())

    def test_a_held_instance_is_reached_by_what_is_held(self, runtime, image, labels):
        engine, iid, recorded = self.lifecycle(runtime, labels)
        try:
            assert engine.observe(Held()) is None
            engine.kill(Held())  # nothing held: nothing to kill
            held = engine.create(self.instance_spec(runtime, image, labels, iid, [], memory_bytes=256 * 1024**2),
                                 Held(), recorded.append)
            assert not engine.observe(held).running and engine.stats(held) is None
            engine.start(held)
            seen = engine.observe(held)
            assert seen.running and seen.ip and seen.id == held.container_id
            engine.put_files(held, {"root/notes/plan.txt": (b"fine-tune\n", 0o644)}, dirs={"root/notes": 0o700})
            assert engine.read_file(held, "/root/notes/plan.txt") == b"fine-tune\n"
            assert engine.read_file(held, "/root/notes/none.txt") is None
            assert engine.exec(held, ["cat", "/root/notes/plan.txt"], timeout_s=10, max_bytes=64) == (0, b"fine-tune\n")
            code, cut = engine.exec(held, ["cat", "/root/notes/plan.txt"], timeout_s=10, max_bytes=4)
            assert cut == b"fine" and code in (0, -1)  # stopped at the size unless it ended first
            assert engine.stats(held).memory_limit == 256 * 1024**2
            copy = engine.copy_system_disk(held, "dockyard/contract-copy", iid, labels)
            engine.kill(held)
            assert not engine.observe(held).running
            twin = runtime.create(self.spec(runtime, copy, labels))
            runtime.start(twin)
            assert runtime.read_file(twin, "/root/notes/plan.txt") == b"fine-tune\n"
            runtime.remove(twin)
            runtime.remove_image(copy)
        finally:
            engine.destroy(iid, f"contract-{iid}", recorded[-1] if recorded else Held())
        assert engine.observe(held) is None
