"""The image catalog: the shipped matrix, its consistency rules, and the driver rule."""

import dataclasses
import shutil
import re
from pathlib import Path

import pytest

from dockyard.core.catalog import (
    CatalogEntry,
    build_args,
    default_catalog_path,
    default_entry,
    load_catalog,
    parse_catalog,
    required_driver,
    validate,
)
from dockyard.core.errors import InvalidInput
from dockyard.core.gpus import driver_runs
from dockyard.runtimes.image_lock import lock_digest, lock_path, stack_lines
from dockyard.runtimes.image_build import BuiltImage, BuildError, build_image, matching_wheels, recipe_dir

DOCKERFILE = recipe_dir() / "Dockerfile"


def dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", DOCKERFILE.read_text(), re.MULTILINE))


@pytest.fixture(scope="module")
def catalog() -> list[CatalogEntry]:
    return load_catalog()


def entry(**changes) -> CatalogEntry:
    base = CatalogEntry(
        name="pytorch-x", ref="dockyard/pytorch:x", framework="pytorch", framework_version="2.9.1",
        cuda="12.8", cudnn="9.10", python="3.12", os="ubuntu-24.04", min_driver=525, default=True,
        description="x",
        build={"base_image": "ubuntu:24.04", "python_version": "3.12", "torch_version": "2.9.1",
               "cuda_variant": "cu128"},
    )
    return dataclasses.replace(base, **changes)


# --- the shipped catalog -----------------------------------------------------------------

def test_shipped_catalog_loads_and_validates(catalog):
    assert default_catalog_path() == Path(__file__).resolve().parents[2] / "images" / "catalog.toml"
    assert len(catalog) >= 5
    assert validate(catalog) == catalog


def test_documented_matrix_is_present(catalog):
    by_name = {e.name: e for e in catalog}
    torch29 = {e.cuda: e for e in catalog if e.framework_version.startswith("2.9.")}
    assert set(torch29) >= {"12.6", "12.8", "13.0"}
    assert {torch29[c].build["cuda_variant"] for c in ("12.6", "12.8", "13.0")} == {"cu126", "cu128", "cu130"}
    assert torch29["13.0"].min_driver == 580 and torch29["13.0"].cudnn == "9.13"
    assert torch29["12.8"].cudnn == torch29["12.6"].cudnn == "9.10"
    assert by_name["pytorch-2.8-cu128"].framework_version == "2.8.0"
    cpu = by_name["pytorch-2.13-cpu"]
    assert (cpu.ref, cpu.cuda, cpu.cudnn, cpu.min_driver, cpu.python) == (
        "dockyard/pytorch:2.13.0-cpu", "none", "none", 0, "3.11")
    assert cpu.build["base_image"] == "dockyard/debian:bookworm"
    assert cpu.build["wheels_dir"] == "/opt/wheels"


def test_default_is_pytorch_29_with_cuda_128(catalog):
    defaults = [e for e in catalog if e.default]
    assert len(defaults) == 1
    assert default_entry(catalog) is defaults[0]
    assert defaults[0].framework_version.startswith("2.9.") and defaults[0].cuda == "12.8"


def test_build_args_are_declared_in_the_dockerfile(catalog):
    declared = dockerfile_args()
    assert {"BASE_IMAGE", "PYTHON_VERSION", "TORCH_VERSION", "CUDA_VARIANT", "TORCH_INDEX_URL",
            "PIP_INDEX_URL", "WHEELS_DIR"} <= declared
    for e in catalog:
        args = build_args(e)
        assert set(args) <= declared, f"{e.name}: {set(args) - declared} not declared"
        assert args["CUDA_VARIANT"] == ("cpu" if e.cuda == "none" else "cu" + e.cuda.replace(".", ""))
        assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{args['CUDA_VARIANT']}"
        assert (args["PYTHON_VERSION"], args["TORCH_VERSION"]) == (e.python, e.framework_version)
        assert e.min_driver >= required_driver(e.cuda)


def test_recipe_has_the_promised_entrypoint_and_no_buildkit_only_syntax():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/usr/local/bin/dockyard-entrypoint"]' in text
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "--mount" not in instructions and "<<" not in instructions
    for label in ("framework", "framework_version", "cuda", "python"):
        assert f"org.dockyard.{label}=" in text


def test_only_the_matching_torch_wheels_go_into_the_context(tmp_path, catalog):
    cpu = next(e for e in catalog if e.name == "pytorch-2.13-cpu")
    for name in ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl"):
        (tmp_path / name).write_bytes(b"")
    assert [w.name for w in matching_wheels(tmp_path, cpu)] == [
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]


# --- contradictions are refused ----------------------------------------------------------

def test_cuda_13_with_a_550_floor_is_refused():
    bad = entry(cuda="13.0", cudnn="9.13", min_driver=550,
                build={**entry().build, "cuda_variant": "cu130"})
    with pytest.raises(InvalidInput, match=r"pytorch-x: CUDA 13.0 needs driver 580 or newer, but min_driver says 550"):
        validate([bad])


def test_variant_must_match_cuda():
    with pytest.raises(InvalidInput, match=r"pytorch-x: cuda_variant cu128 does not match cuda 12.6"):
        validate([entry(cuda="12.6")])
    with pytest.raises(InvalidInput, match=r"cuda_variant cpu does not match cuda 12.8"):
        validate([entry(build={**entry().build, "cuda_variant": "cpu"})])
    with pytest.raises(InvalidInput, match=r"cuda_variant cu128 does not match cuda none"):
        validate([entry(cuda="none", cudnn="none", min_driver=0)])


def test_exactly_one_default():
    with pytest.raises(InvalidInput, match=r"exactly one image must be the default, found 2"):
        validate([entry(), entry(name="pytorch-y")])
    with pytest.raises(InvalidInput, match=r"found 0"):
        validate([entry(default=False)])


def test_duplicate_names_are_refused():
    with pytest.raises(InvalidInput, match=r"pytorch-x: duplicate image name"):
        validate([entry(), entry(default=False)])


def test_missing_and_mistyped_fields_are_refused():
    good = dataclasses.asdict(entry())
    for key in ("ref", "min_driver", "build", "cudnn"):
        data = {k: v for k, v in good.items() if k != key}
        with pytest.raises(InvalidInput, match=rf"pytorch-x: missing field\(s\): {key}"):
            parse_catalog({"image": [data]})
    with pytest.raises(InvalidInput, match=r"min_driver must be an integer"):
        parse_catalog({"image": [{**good, "min_driver": "525"}]})
    with pytest.raises(InvalidInput, match=r"build is missing base_image"):
        parse_catalog({"image": [{**good, "build": {k: v for k, v in good["build"].items() if k != "base_image"}}]})
    with pytest.raises(InvalidInput, match=r"no \[\[image\]\] entries"):
        parse_catalog({})


def test_python_and_torch_must_agree_with_the_build():
    with pytest.raises(InvalidInput, match=r"python_version 3.11 differs from python 3.12"):
        validate([entry(build={**entry().build, "python_version": "3.11"})])
    with pytest.raises(InvalidInput, match=r"torch_version 2.9.1 differs from framework_version 2.8.0"):
        validate([entry(framework_version="2.8.0")])


# --- the driver rule ---------------------------------------------------------------------

@pytest.mark.parametrize("cuda, driver", [
    ("11.8", 450), ("12.0", 525), ("12.6", 525), ("12.8", 525), ("12.9", 525), ("13.0", 580),
    ("none", 0),
])
def test_required_driver(cuda, driver):
    assert required_driver(cuda) == driver


def test_required_driver_refuses_nonsense():
    for cuda in ("12", "cu128", "10.2", ""):
        with pytest.raises(InvalidInput):
            required_driver(cuda)


def test_driver_runs_catalog_entries(catalog):
    by_name = {e.name: e.min_driver for e in catalog}
    cu130, cu128, cpu = by_name["pytorch-2.9-cu130"], by_name["pytorch-2.9-cu128"], by_name["pytorch-2.13-cpu"]
    assert not driver_runs("550.54.15", cu130)
    assert driver_runs("580.95.05", cu130)
    assert driver_runs("525.60.13", cu128)
    assert not driver_runs("520.61.05", cu128)
    assert driver_runs("470.82.01", cpu)
    # A node without a driver (no GPUs) runs any image, on the CPU.
    assert driver_runs(None, cu130) and driver_runs(None, cpu)


# --- build_image, against a fake engine ---------------------------------------------------

class FakeEngine:
    """Records what build_image sends, answers with canned build output."""

    def __init__(self, items):
        self.items = items
        self.calls = []
        self.api = self
        self.images = self
        self.context_files = {}

    def build(self, **kwargs):
        self.calls.append(kwargs)
        context = Path(kwargs["path"])
        self.context_files = {
            str(p.relative_to(context)): p.stat().st_size for p in context.rglob("*") if p.is_file()
        }
        yield from self.items

    def get(self, ref):
        return type("Image", (), {"id": "sha256:abc", "attrs": {"Size": 1234}})()


def test_build_image_assembles_the_context_and_streams_progress(tmp_path, catalog):
    cpu = next(e for e in catalog if e.name == "pytorch-2.13-cpu")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"w" * 10)
    (wheels / "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"old")
    cpu = dataclasses.replace(cpu, build={**cpu.build, "wheels_dir": str(wheels)})
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    engine = FakeEngine([{"stream": "Step 1/2 : FROM x\n"}, {"stream": "\n"}, {"stream": " ---> abc\n"},
                         {"aux": {"ID": "sha256:abc"}}])
    lines = []
    built = build_image(engine, cpu, recipe_dir(), ca, lines.append)
    assert built == BuiltImage(id="sha256:abc", ref="dockyard/pytorch:2.13.0-cpu", size_bytes=1234)
    assert lines[-2:] == ["Step 1/2 : FROM x", "---> abc"]
    call = engine.calls[0]
    assert (call["tag"], call["rm"], call["forcerm"], call["pull"], call["decode"]) == (
        "dockyard/pytorch:2.13.0-cpu", True, True, False, True)
    assert call["buildargs"]["BASE_IMAGE"] == "dockyard/debian:bookworm"
    assert engine.context_files == {
        "Dockerfile": (recipe_dir() / "Dockerfile").stat().st_size,
        "entrypoint.sh": (recipe_dir() / "entrypoint.sh").stat().st_size,
        "dockyard-check": (recipe_dir() / "dockyard-check").stat().st_size,
        "dockyard_jupyter_auth.py": (recipe_dir() / "dockyard_jupyter_auth.py").stat().st_size,
        "jupyter-server-proxy.json": (recipe_dir() / "jupyter-server-proxy.json").stat().st_size,
        "stack.lock": lock_path(cpu).stat().st_size,
        "extra-ca.crt": ca.stat().st_size,
        "wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl": 10,
    }
    # The lock goes into the image's labels: its package lines and their digest.
    lock = lock_path(cpu).read_text()
    assert call["labels"] == {"org.dockyard.lock": "\n".join(stack_lines(lock)),
                              "org.dockyard.lock_sha256": lock_digest(lock)}
    assert "pandas==" in call["labels"]["org.dockyard.lock"] and "torch==" not in call["labels"]["org.dockyard.lock"]


def test_build_image_without_ca_or_wheels_sends_empty_ones(catalog):
    default = default_entry(catalog)
    engine = FakeEngine([{"stream": "ok\n"}])
    build_image(engine, default, recipe_dir(), None, lambda line: None)
    assert engine.context_files["extra-ca.crt"] == 0
    assert not [name for name in engine.context_files if name.startswith("wheels/")]
    assert engine.calls[0]["buildargs"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu128"


def test_build_image_raises_on_an_error_item(catalog):
    engine = FakeEngine([{"stream": "Step 5/9 : RUN apt-get update\n"},
                         {"error": "The command returned a non-zero code: 1",
                          "errorDetail": {"message": "The command returned a non-zero code: 1"}}])
    with pytest.raises(BuildError, match=r"building dockyard/pytorch:2.9.1-cu128 failed: The command"):
        build_image(engine, default_entry(catalog), recipe_dir(), None, lambda line: None)


def test_every_catalog_entry_has_a_lock_of_the_stack(catalog):
    """One lock per entry, with every package of images/stack.in pinned, and no torch (the
    Dockerfile pins torch to the entry's version and variant)."""
    stack = [line.strip() for line in (recipe_dir().parent / "stack.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for entry in catalog:
        pins = dict(line.split("==") for line in stack_lines(lock_path(entry).read_text()))
        assert set(stack) <= set(pins), entry.name
        assert "torch" not in pins and not [name for name in pins if name.startswith("nvidia-")], entry.name


def test_build_image_refuses_an_entry_without_a_lock(tmp_path, catalog):
    recipe = tmp_path / "pytorch-cuda"
    shutil.copytree(recipe_dir(), recipe)
    with pytest.raises(BuildError, match=r"pytorch-2.9-cu128: no lock at .*image_lock pytorch-2.9-cu128"):
        build_image(FakeEngine([]), default_entry(catalog), recipe, None, lambda line: None)
