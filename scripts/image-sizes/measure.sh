#!/usr/bin/env bash
# What each addition of the image recipe costs (docs/images.md, "Size"):
#   scripts/image-sizes/measure.sh [IMAGE] [BASE]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image=${1:-dockyard/pytorch:2.13.0-cpu}
base=${2:-dockyard/debian:bookworm}
echo "== $image: $(docker image inspect -f '{{.Size}}' "$image") bytes; its layers:"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | awk -F'\t' '$1 != "0B"' | cut -c1-90
echo "== the venv: what each stack package adds (MB)"
docker run --rm --entrypoint "" -v "$here/venv_groups.py:/g.py:ro" "$image" python /g.py
echo "== apt additions (bytes), installed in turn on $base"
docker run --rm -v "$here/apt_groups.sh:/m.sh:ro" "$base" bash /m.sh
