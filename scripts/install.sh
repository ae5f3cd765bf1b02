#!/usr/bin/env bash
# Everything Dockyard needs on a Debian machine, as root. Safe to run twice.
# Installs Debian packages and the Python package (in .venv), starts dockerd if no
# engine answers, and builds the local base image. Sourced by run.sh and test.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ssh >/dev/null || need_apt+=(openssh-client)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_apt+=(busybox-static)  # the platform's own tools in instances: static
command -v iptables >/dev/null || need_apt+=(iptables)  # instances kept off the host's addresses
command -v rsync >/dev/null || need_apt+=(rsync)  # the tests copy folders into instances with it
command -v chromium >/dev/null || need_apt+=(chromium)  # the console's end-to-end tests (Playwright)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)  # data disks and volumes of a fixed size (docs/volumes.md)
command -v losetup >/dev/null || need_apt+=(mount)
command -v mkfs.btrfs >/dev/null || need_apt+=(btrfs-progs)  # the system disk tests run an engine on btrfs
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv python3-pip)
for extra in "$@"; do need_apt+=("$extra"); done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "==> starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
echo "==> installing Python packages"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import dockyard' 

echo "==> base image"
./scripts/build-base-image.sh dockyard/debian:bookworm
