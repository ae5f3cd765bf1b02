#!/usr/bin/env bash
# Run inside a throwaway container of the base image: the disk each apt addition of the
# recipe costs, installed in turn on top of the image's earlier package set.
set -eu
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates openssh-server tini git tmux \
    curl vim-tiny nano htop less procps iproute2 >/dev/null 2>&1
rm -rf /var/cache/apt/archives/*.deb
prev=$(du -sxb / 2>/dev/null | cut -f1)
for group in "rsync" "wget" "vim" "unzip zip" "screen" "openssh-client" "git-lfs" "build-essential" "python3-dev"; do
  apt-get install -y -qq --no-install-recommends $group >/dev/null 2>&1
  rm -rf /var/cache/apt/archives/*.deb
  now=$(du -sxb / 2>/dev/null | cut -f1)
  echo "$group	$((now - prev))"
  prev=$now
done
