"""GPU utilisation and memory of this host's NVIDIA GPUs, by UUID, through NVML.

Only the GPUs of the machine Dockyard runs on can be read this way; others (a remote
engine's, simulated ones) get no sample, so they show as "no data", never a made-up number.
On a GPU machine, `python -m dockyard.runtimes.gpu_metrics` prints what this reads.
"""

from __future__ import annotations

from dockyard.core.metrics import GpuSample


class GpuMeter:
    def __init__(self, nvml=None):
        self._nvml = nvml  # the pynvml module (a stand-in in unit tests)
        self._state = "closed"  # closed -> open, or -> absent (no NVML here: not tried again)

    def read(self, uuids: list[str]) -> dict[str, GpuSample]:
        """A sample for each of `uuids` that NVML knows; the rest are left out."""
        if not uuids or not self._open():
            return {}
        nvml, found = self._nvml, {}
        for uuid in uuids:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
                # % of the last sample period (1/6 s to 1 s) in which a kernel ran.
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError:
                continue  # not a GPU of this host, or it fell off the bus
            found[uuid] = GpuSample(uuid=uuid, util_percent=float(util), memory_used=int(memory.used),
                                    memory_total=int(memory.total))
        return found

    def _open(self) -> bool:
        if self._state == "closed":
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            try:
                self._nvml.nvmlInit()  # once: an init costs up to a second without persistence mode
                self._state = "open"
            except self._nvml.NVMLError:
                self._state = "absent"  # no libnvidia-ml or no driver: a machine without GPUs
        return self._state == "open"

    def close(self) -> None:
        if self._state == "open":
            self._nvml.nvmlShutdown()
        self._state = "closed"


def main() -> None:  # pragma: no cover - run by hand on a GPU machine
    import time

    from dockyard.runtimes.gpu_discovery import discover_nvml

    gpus = discover_nvml()
    if not gpus:
        print("no NVIDIA GPU found through NVML")
        return
    meter = GpuMeter()
    try:
        for _ in range(5):
            samples = meter.read([g.uuid for g in gpus])
            for gpu in gpus:
                s = samples.get(gpu.uuid)
                print(f"GPU {gpu.index} {gpu.model} {gpu.uuid}: " + (
                    f"{s.util_percent:.0f}% busy, {s.memory_used / 2**20:.0f} of {s.memory_total / 2**20:.0f} MiB"
                    if s else "no data"))
            time.sleep(1)
    finally:
        meter.close()


if __name__ == "__main__":  # pragma: no cover
    main()
