"""The pure parts of a migration (docs/migrate.md): reading and comparing the manifests
of a disk and its copy, and choosing the node it moves to."""

import pytest

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.core.migration import choose_target
from dockyard.core.placement import FreeGpu, NodeView
from dockyard.core.treecheck import ManifestError, differences, parse

DIGEST = "a" * 32
SOURCE = f"""directory|-|755|0:0|./deep
regular file|3000000|644|0:0|./deep/blob
regular empty file|0|644|0:0|./empty
regular file|7|640|1234:99|./own
symbolic link|9|777|0:0|./link
regular file|5|644|0:0|./a|b with a bar
tree|{DIGEST}
"""


def test_a_manifest_counts_files_and_bytes_and_keeps_odd_names():
    manifest = parse(SOURCE)
    assert manifest.files == 5 and manifest.bytes == 3000012
    assert manifest.entries["./a|b with a bar"] == ("regular file", "5", "644", "0:0")
    assert manifest.entries["./empty"][0] == "regular file"  # busybox says "regular empty file"
    assert differences(manifest, parse(SOURCE)) == []


def test_differences_name_the_file_and_what_changed():
    copy = SOURCE.replace("|640|1234:99|./own", "|644|0:0|./own").replace("3000000", "2999999")
    copy = copy.replace("symbolic link|9|777|0:0|./link\n", "").replace(DIGEST, "b" * 32)
    copy += "regular file|1|644|0:0|./stray\n"
    found = differences(parse(SOURCE), parse(copy))
    assert found == ["./deep/blob: size 3000000 -> 2999999", "./link is missing",
                     "./own: mode 640 -> 644, owner 1234:99 -> 0:0", "./stray is not on the source",
                     "the checksum of the files' contents differs"]
    assert len(differences(parse(SOURCE), parse(copy), limit=2)) == 3  # two entries, then the checksum


def test_output_that_is_no_manifest_is_refused():
    with pytest.raises(ManifestError):
        parse("regular file|3|644|./x\ntree|" + DIGEST)
    with pytest.raises(ManifestError, match="checksum"):
        parse("regular file|3|644|0:0|./x\n")


def gpus(node: str, count: int, model: str = "A100") -> list[FreeGpu]:
    return [FreeGpu(id=hash((node, i)) % 10**6, index=i, uuid=f"{node}-{i}", model=model) for i in range(count)]


VIEWS = [NodeView("a", {"A100": 2}, gpus("a", 1)), NodeView("b", {"A100": 4}, gpus("b", 3)),
         NodeView("c", {"A100": 2}, gpus("c", 2)), NodeView("d", {"H100": 1}, gpus("d", 1, "H100"))]
KNOWN = {"a", "b", "c", "d", "down"}


def test_a_named_node_is_checked_and_its_gpus_taken():
    placement = choose_target(VIEWS, KNOWN, "a", "A100", 2, "b")
    assert placement.node == "b" and len(placement.gpus) == 2


@pytest.mark.parametrize("wanted, error, words", [
    ("nowhere", NotFound, "node 'nowhere' not found"),
    ("a", InvalidInput, "on node a already"),
    ("down", Conflict, "node down is offline"),
    ("c", Conflict, "on node c 2 A100 GPUs are free; the instance needs 3"),
    ("d", Conflict, "on node d it has no A100 GPUs"),
])
def test_bad_targets_name_the_reason(wanted, error, words):
    with pytest.raises(error, match=words) as raised:
        choose_target(VIEWS, KNOWN, "a", "A100", 3, wanted)
    assert raised.value.field == "node"


def test_without_a_node_the_best_fit_among_the_others():
    assert choose_target(VIEWS, KNOWN, "a", "A100", 2, None).node == "c"  # the fewest free that fit
    assert choose_target(VIEWS, KNOWN, "c", "A100", 1, None).node == "a"
    with pytest.raises(Conflict, match=r"no other node has 4 free A100 GPUs \(b: 3, c: 2, d: 0\)"):
        choose_target(VIEWS, KNOWN, "a", "A100", 4, None)
