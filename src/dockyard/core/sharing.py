"""GPU sharing: how a node splits its GPUs, and which shares a request asks for. Pure.

A node's `gpu_sharing` is one of:

- `time-slicing:N`: every GPU in N equal parts; shares k/N (k < N) are offered. The
  processes of all shares run in turns on the whole GPU: nothing is isolated.
- `mps:N`: the same parts, run as clients of one MPS daemon per GPU with a memory limit
  (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT) and a compute limit per share: memory is isolated,
  faults are not (one client's fatal error takes the others down).
- `mig`: GPUs in MIG mode offer their MIG instances, each by its profile name
  (`1g.18gb`); memory and faults are isolated. Simulated GPUs declare the instances each
  has: `mig:3g.71gb+2g.35gb+1g.18gb*2`.

Money is counted in milli-GPUs: a half is 500, a MIG instance its compute slices of 7.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from dockyard.core.errors import InvalidInput
from dockyard.core.gpus import GpuFacts, MigFacts

TIME_SLICING, MPS, MIG = "time-slicing", "mps", "mig"
SPLIT_MODES = (TIME_SLICING, MPS)  # modes that cut a GPU into equal parts
MODES = (*SPLIT_MODES, MIG)
MILLI = 1000
# Parts must divide 1000, so that every share is a whole number of milli-GPUs.
ALLOWED_PARTS = tuple(n for n in range(2, 11) if MILLI % n == 0)  # 2, 4, 5, 8, 10
MIG_COMPUTE_SLICES = 7  # A100, H100, H200, B200: seven compute slices per GPU

_MIG_PROFILE_RE = re.compile(r"^([1-7])g\.(\d{1,4})gb(\+me)?$")
_SHARE_RE = re.compile(r"^(\d+(\.\d*)?|\.\d+|\d+/\d+)$")


@dataclass(frozen=True)
class SharingSpec:
    mode: str
    parts: int = 1  # time-slicing and mps
    mig_layout: tuple[str, ...] = ()  # the MIG instances of each simulated GPU

    @property
    def text(self) -> str:
        if self.mode == MIG:
            return MIG + (":" + "+".join(self.mig_layout) if self.mig_layout else "")
        return f"{self.mode}:{self.parts}"


@dataclass(frozen=True)
class Share:
    """What a request for part of one GPU asks for: a fraction of a split GPU, or a MIG
    instance of a profile."""

    label: str  # as shown and stored: "0.5", "1g.18gb"
    fraction: Fraction | None = None
    profile: str | None = None

    @property
    def milli(self) -> int:
        if self.profile is not None:
            return mig_milli(self.profile)
        return int(self.fraction * MILLI)

    def slots_on(self, parts: int) -> int | None:
        """How many of a split GPU's `parts` this share takes; None if it is no whole number."""
        if self.fraction is None:
            return None
        needed = self.fraction * parts
        return int(needed) if needed.denominator == 1 and 0 < needed < parts else None


def is_mig_profile(text: str) -> bool:
    return bool(_MIG_PROFILE_RE.match(text))


def mig_milli(profile: str) -> int:
    """A MIG instance's part of its GPU, by compute slices: 1g of 7 is 143 milli-GPUs."""
    slices = int(_MIG_PROFILE_RE.match(profile).group(1))
    return (slices * MILLI * 2 + MIG_COMPUTE_SLICES) // (2 * MIG_COMPUTE_SLICES)


def mig_memory_mb(profile: str) -> int:
    return int(_MIG_PROFILE_RE.match(profile).group(2)) * 1024


def format_fraction(fraction: Fraction) -> str:
    """Fraction(1, 4) -> '0.25' (every offered share has a finite decimal)."""
    text = format(Decimal(fraction.numerator) / Decimal(fraction.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_milli(milli: int) -> str:
    """GPU thousandths as GPUs: 2000 -> '2', 500 -> '0.5', 143 -> '0.143'."""
    return format_fraction(Fraction(milli, MILLI))


def offered_fractions(parts: int) -> list[Fraction]:
    return [Fraction(k, parts) for k in range(1, parts)]


def parse_sharing(spec: str | None, where: str = "gpu_sharing") -> SharingSpec | None:
    """Parse a node's `gpu_sharing`; None or "" (or "none") means whole GPUs only."""
    text = (spec or "").strip()
    if text in ("", "none"):
        return None
    mode, _, rest = text.partition(":")
    mode, rest = mode.strip(), rest.strip()
    if mode in SPLIT_MODES:
        if not rest.isdecimal() or int(rest) not in ALLOWED_PARTS:
            raise InvalidInput(f"{where}: {text!r}: {mode} needs a number of parts, one of "
                               f"{', '.join(map(str, ALLOWED_PARTS))} (e.g. {mode}:4)")
        return SharingSpec(mode, parts=int(rest))
    if mode == MIG:
        return SharingSpec(MIG, mig_layout=_parse_mig_layout(rest, text, where) if rest else ())
    raise InvalidInput(f"{where}: {text!r}: the mode must be one of {', '.join(MODES)} "
                       f"(e.g. time-slicing:2, mps:4, mig)")


def _parse_mig_layout(rest: str, text: str, where: str) -> tuple[str, ...]:
    layout: list[str] = []
    for item in (p.strip() for p in rest.split("+")):
        # '1g.18gb+me' is one profile; a '+' before 'me' does not separate.
        if item == "me" and layout:
            layout[-1] += "+me"
            continue
        profile, star, count = item.partition("*")
        if not is_mig_profile(profile):
            raise InvalidInput(f"{where}: {text!r}: {profile!r} is not a MIG profile (like 1g.18gb or 3g.71gb)")
        if star and (not count.isdecimal() or not 1 <= int(count) <= MIG_COMPUTE_SLICES):
            raise InvalidInput(f"{where}: {text!r}: bad count {count!r} for {profile}")
        layout.extend([profile] * (int(count) if star else 1))
    slices = sum(int(p.split("g.")[0]) for p in layout)
    if slices > MIG_COMPUTE_SLICES:
        raise InvalidInput(f"{where}: {text!r}: the instances take {slices} compute slices; a GPU has "
                           f"{MIG_COMPUTE_SLICES}")
    return tuple(layout)


def parse_share(text: str) -> Share:
    """'0.5', '0.25', '1/4' or a MIG profile ('1g.18gb') -> a Share. Whole GPUs are not
    shares: they go as a count."""
    value = text.strip().lower()
    if is_mig_profile(value):
        return Share(label=value, profile=value)
    if not _SHARE_RE.match(value):
        raise InvalidInput(f"gpu_share: {text!r} is not a share; use a part of one GPU such as 0.5 or 0.25, "
                           f"or a MIG profile such as 1g.18gb", field="gpu_share")
    try:
        fraction = Fraction(value) if "/" in value else Fraction(Decimal(value))
    except (ValueError, ZeroDivisionError, InvalidOperation):
        raise InvalidInput(f"gpu_share: {text!r} is not a share", field="gpu_share") from None
    if not 0 < fraction < 1:
        raise InvalidInput(f"gpu_share: {text!r} is not a share; a share is more than 0 and less than one GPU "
                           f"(whole GPUs go as a count: --gpus 1)", field="gpu_share")
    if (fraction * MILLI).denominator != 1:
        raise InvalidInput(f"gpu_share: {text!r} is not a share offered here: shares are whole thousandths "
                           f"of a GPU, like 0.5 or 0.25", field="gpu_share")
    return Share(label=format_fraction(fraction), fraction=fraction)


@dataclass(frozen=True)
class SlotFacts:
    """One rentable part of a GPU. A whole rental of the GPU takes all of them."""

    slot: int
    mig_uuid: str | None = None
    profile: str | None = None
    memory_mb: int | None = None


def simulated_mig(gpu_uuid: str, layout: tuple[str, ...]) -> tuple[MigFacts, ...]:
    """MIG instances for a simulated GPU, with UUIDs that stay the same across restarts."""
    return tuple(
        MigFacts(uuid="MIG-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"dockyard-sim-mig/{gpu_uuid}/{i}")),
                 profile=profile, memory_mb=mig_memory_mb(profile))
        for i, profile in enumerate(layout)
    )


def slot_layout(gpu: GpuFacts, spec: SharingSpec | None) -> tuple[str | None, list[SlotFacts]]:
    """How a GPU is cut under a node's sharing: its mode (None: whole only) and its parts.
    Under `mig`, a GPU that is not in MIG mode (no instances) stays whole."""
    if spec is None:
        return None, [SlotFacts(0)]
    if spec.mode in SPLIT_MODES:
        return spec.mode, [SlotFacts(i) for i in range(spec.parts)]
    instances = gpu.mig or (simulated_mig(gpu.uuid, spec.mig_layout) if gpu.simulated else ())
    if not instances:
        return None, [SlotFacts(0)]
    return MIG, [SlotFacts(i, m.uuid, m.profile, m.memory_mb) for i, m in enumerate(instances)]


# Where MPS clients and their GPU's daemon meet (CUDA_MPS_PIPE_DIRECTORY on both sides).
MPS_PIPE_DIR = "/tmp/nvidia-mps"


@dataclass(frozen=True)
class GpuAccess:
    """How a container reaches the GPUs (or the share) it holds: the device ids its device
    request and NVIDIA_VISIBLE_DEVICES name, what its environment says, and the GPU whose
    MPS daemon it must join (None: no daemon)."""

    device_ids: tuple[str, ...]
    env: dict[str, str]
    mps_gpu: str | None = None


def gpu_access(gpu_uuids: list[str], share: str | None, milli: int, mode: str | None,
               mig_uuids: list[str], memory_mb: int, real: bool) -> GpuAccess:
    """Decide a container's GPU access. Whole GPUs go by their UUIDs. A MIG share goes by
    its MIG instance's UUID (the driver isolates it). A time-sliced share gets the whole
    GPU, told its part; under MPS, on a real GPU, it joins the GPU's MPS daemon with its
    memory pinned to its part (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT; the GPU is device 0 in the
    container) and its part of the GPU's threads."""
    if share is None:
        return GpuAccess(tuple(gpu_uuids), {})
    if mode == MIG:
        return GpuAccess(tuple(mig_uuids), {"DOCKYARD_GPU_SHARE": share})
    limit_mb = memory_mb * milli // MILLI
    env = {"DOCKYARD_GPU_SHARE": share, "DOCKYARD_GPU_MEMORY_MB": str(limit_mb)}
    if mode == MPS and real:
        env.update({
            "CUDA_MPS_PIPE_DIRECTORY": MPS_PIPE_DIR,
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={limit_mb}M",
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(max(1, milli * 100 // MILLI)),
        })
        return GpuAccess(tuple(gpu_uuids), env, mps_gpu=gpu_uuids[0])
    return GpuAccess(tuple(gpu_uuids), env)
