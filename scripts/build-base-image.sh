#!/usr/bin/env bash
# Build the local Debian base image without any registry: debootstrap a root
# filesystem from Debian's package mirror and `docker import` it.
# Safe to run twice: an existing image is kept unless FORCE=1.
set -euo pipefail
IMAGE="${1:-dockyard/debian:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE already present"
  exit 0
fi
root=$(mktemp -d /var/tmp/dockyard-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap $SUITE into $root (about a minute)..."
debootstrap --variant=minbase --include=ca-certificates,procps,iproute2 \
  "$SUITE" "$root" "$MIRROR" | grep -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring) ' \
  | awk '{ if (++n % 20 == 1) print "  " $0 }' || true
test -x "$root/bin/sh" || { echo "debootstrap failed" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo "importing $IMAGE..."
tar -C "$root" -c . | docker import -c 'CMD ["sleep", "infinity"]' -c 'ENV LANG=C.UTF-8' - "$IMAGE"
echo "built $IMAGE"
