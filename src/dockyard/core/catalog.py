"""The image catalog: which framework images Dockyard builds, and which nodes can run them.

Pure logic (no I/O but `load_catalog`). The catalog lives in `images/catalog.toml`; each
entry names one build of the single recipe `images/pytorch-cuda/Dockerfile`.

Driver rule: the PyTorch wheels bundle their CUDA runtime, so by NVIDIA's minor-version
compatibility a CUDA 12.x image runs on any driver of branch 525 or newer, and a CUDA 13.x
image on 580 or newer (11.x: 450). This is the floor an entry's `min_driver` may not go
below. (Features that need a newer driver, such as PTX JIT of newer code, are not covered
by minor-version compatibility; `dockyard.core.gpus.max_cuda_for_driver` gives the toolkit
table.)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from dockyard.core.errors import InvalidInput

# Lowest driver branch for each CUDA major version under minor-version compatibility.
_DRIVER_FOR_CUDA_MAJOR = {11: 450, 12: 525, 13: 580}

# Build args of images/pytorch-cuda/Dockerfile that come from the catalog.
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"

# Labels of a built image that record its locked Python stack (images/locks/<name>.txt).
LOCK_LABEL = "org.dockyard.lock"  # the lock's `name==version` lines, one a line
LOCK_DIGEST_LABEL = "org.dockyard.lock_sha256"

_CUDA_RE = re.compile(r"^(\d+)\.(\d+)$")
_REQUIRED_BUILD_KEYS = ("base_image", "python_version", "torch_version", "cuda_variant")


@dataclass(frozen=True)
class CatalogEntry:
    """One image of the family, as `[[image]]` in catalog.toml describes it."""

    name: str
    ref: str
    framework: str
    framework_version: str
    cuda: str  # "12.8", or "none" for a CPU build
    cudnn: str  # "9.10", or "none"
    python: str
    os: str
    min_driver: int  # lowest driver branch (e.g. 525); 0 for CPU images
    default: bool
    description: str
    build: dict[str, str] = field(default_factory=dict)


_FIELDS = [f.name for f in fields(CatalogEntry)]


def default_catalog_path() -> Path:
    """`images/catalog.toml` of the source tree this package runs from.

    Dockyard is installed editable (`pip install -e .`), so the repository is
    `parents[3]` of this file; a non-editable install has no catalog there (pass a path).
    """
    return Path(__file__).resolve().parents[3] / "images" / "catalog.toml"


def required_driver(cuda: str) -> int:
    """Lowest driver branch that runs images built for `cuda`: '12.8' -> 525, 'none' -> 0."""
    if cuda == "none":
        return 0
    match = _CUDA_RE.match(cuda)
    if not match:
        raise InvalidInput(f"CUDA version {cuda!r} is not like '12.8' or 'none'")
    major = int(match.group(1))
    if major not in _DRIVER_FOR_CUDA_MAJOR:
        raise InvalidInput(f"CUDA {cuda} is not supported (known: 11.x, 12.x, 13.x)")
    return _DRIVER_FOR_CUDA_MAJOR[major]


def variant_for_cuda(cuda: str) -> str:
    """The PyTorch wheel variant of a CUDA version: '12.8' -> 'cu128', 'none' -> 'cpu'."""
    if cuda == "none":
        return "cpu"
    match = _CUDA_RE.match(cuda)
    if not match:
        raise InvalidInput(f"CUDA version {cuda!r} is not like '12.8' or 'none'")
    return f"cu{match.group(1)}{match.group(2)}"


def entry_from_dict(data: dict) -> CatalogEntry:
    """One `[[image]]` table as an entry; missing or mistyped fields are refused."""
    name = data.get("name") or "<unnamed image>"
    missing = [key for key in _FIELDS if key not in data]
    if missing:
        raise InvalidInput(f"{name}: missing field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"{name}: unknown field(s): {', '.join(unknown)}")
    text_fields = [key for key in _FIELDS if key not in ("min_driver", "default", "build")]
    for key in text_fields:
        if not isinstance(data[key], str) or not data[key].strip():
            raise InvalidInput(f"{name}: {key} must be a non-empty string")
    if not isinstance(data["min_driver"], int) or isinstance(data["min_driver"], bool):
        raise InvalidInput(f"{name}: min_driver must be an integer driver branch, e.g. 525")
    if not isinstance(data["default"], bool):
        raise InvalidInput(f"{name}: default must be true or false")
    build = data["build"]
    if not isinstance(build, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in build.items()
    ):
        raise InvalidInput(f"{name}: build must be a table of strings")
    return CatalogEntry(**{**data, "build": dict(build)})


def validate(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """Refuse a catalog that contradicts itself; return it unchanged otherwise."""
    seen: set[str] = set()
    for entry in entries:
        name = entry.name
        if name in seen:
            raise InvalidInput(f"{name}: duplicate image name")
        seen.add(name)
        if entry.framework != "pytorch":
            raise InvalidInput(f"{name}: framework {entry.framework} has no recipe (only pytorch)")
        missing = [key for key in _REQUIRED_BUILD_KEYS if not entry.build.get(key)]
        if missing:
            raise InvalidInput(f"{name}: build is missing {', '.join(missing)}")
        try:
            needed = required_driver(entry.cuda)
        except InvalidInput as exc:
            raise InvalidInput(f"{name}: {exc.message}") from None
        if entry.min_driver < needed:
            raise InvalidInput(
                f"{name}: CUDA {entry.cuda} needs driver {needed} or newer, "
                f"but min_driver says {entry.min_driver}"
            )
        variant = entry.build["cuda_variant"]
        if variant != variant_for_cuda(entry.cuda):
            raise InvalidInput(
                f"{name}: cuda_variant {variant} does not match cuda {entry.cuda} "
                f"(expected {variant_for_cuda(entry.cuda)})"
            )
        if (entry.cuda == "none") != (entry.cudnn == "none"):
            raise InvalidInput(f"{name}: cudnn {entry.cudnn} does not fit cuda {entry.cuda}")
        if entry.build["python_version"] != entry.python:
            raise InvalidInput(
                f"{name}: build python_version {entry.build['python_version']} "
                f"differs from python {entry.python}"
            )
        if entry.build["torch_version"] != entry.framework_version:
            raise InvalidInput(
                f"{name}: build torch_version {entry.build['torch_version']} "
                f"differs from framework_version {entry.framework_version}"
            )
    defaults = [entry.name for entry in entries if entry.default]
    if len(defaults) != 1:
        listed = ", ".join(defaults) if defaults else "none"
        raise InvalidInput(f"exactly one image must be the default, found {len(defaults)} ({listed})")
    return entries


def parse_catalog(data: dict) -> list[CatalogEntry]:
    images = data.get("image")
    if not isinstance(images, list) or not images:
        raise InvalidInput("the catalog has no [[image]] entries")
    return validate([entry_from_dict(item) for item in images])


def load_catalog(path: Path | str | None = None) -> list[CatalogEntry]:
    """Read and validate a catalog TOML file (default: `default_catalog_path()`)."""
    path = Path(path) if path is not None else default_catalog_path()
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: {exc}") from None
    return parse_catalog(data)


def find(entries: list[CatalogEntry], name: str) -> CatalogEntry:
    for entry in entries:
        if entry.name == name:
            return entry
    raise InvalidInput(f"no image named {name!r} in the catalog "
                       f"(known: {', '.join(e.name for e in entries)})")


def default_entry(entries: list[CatalogEntry]) -> CatalogEntry:
    return next(entry for entry in entries if entry.default)


def build_args(entry: CatalogEntry) -> dict[str, str]:
    """The build args of images/pytorch-cuda/Dockerfile for one entry."""
    build = entry.build
    variant = build["cuda_variant"]
    args = {
        "BASE_IMAGE": build["base_image"],
        "PYTHON_VERSION": build["python_version"],
        "TORCH_VERSION": build["torch_version"],
        "CUDA_VARIANT": variant,
        "CUDA_VERSION": entry.cuda,
        "CUDNN_VERSION": entry.cudnn,
        "TORCH_INDEX_URL": build.get("torch_index_url") or TORCH_INDEX.format(variant=variant),
    }
    if build.get("pip_index_url"):
        args["PIP_INDEX_URL"] = build["pip_index_url"]
    return args
