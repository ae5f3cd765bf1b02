#!/usr/bin/env bash
# Install and run Dockyard with the embedded defaults: SQLite, the local Docker engine,
# a locally built image; simulated GPUs when the host has no NVIDIA GPU. Safe to run
# twice: a server that is already up is left running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install.sh"

export DOCKYARD_HOME="${DOCKYARD_HOME:-$HOME/.local/share/dockyard}"
port="${DOCKYARD_PORT:-8000}"
url="http://127.0.0.1:$port"
mkdir -p "$DOCKYARD_HOME"
if [ ! -f "$DOCKYARD_HOME/config.toml" ]; then
  {
    echo "host = \"${DOCKYARD_HOST:-127.0.0.1}\""
    echo "port = $port"
    # Image builds trust the host's CA bundle too (needed behind a TLS-intercepting proxy).
    [ -f /etc/ssl/certs/ca-certificates.crt ] && echo 'build_ca_bundle = "/etc/ssl/certs/ca-certificates.crt"'
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
      echo '# No NVIDIA GPU on this host: declare simulated ones to try the whole flow.'
      echo 'simulated_gpus = "A100-80GB:4,RTX-4090:2"'
    fi
  } > "$DOCKYARD_HOME/config.toml"
fi

password_file="$DOCKYARD_HOME/admin-password"
if [ ! -f "$password_file" ]; then
  (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' > "$password_file")
  .venv/bin/dockyard admin create-user admin --admin --password-stdin < "$password_file"
fi

pidfile="$DOCKYARD_HOME/server.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "==> Dockyard already running (pid $(cat "$pidfile"))"
else
  echo "==> starting Dockyard on $url (log: $DOCKYARD_HOME/server.log)"
  nohup .venv/bin/dockyard serve >>"$DOCKYARD_HOME/server.log" 2>&1 &
  echo $! > "$pidfile"
fi
healthy() { .venv/bin/python -c "import httpx, sys; httpx.get('$url/healthz').raise_for_status()" 2>/dev/null; }
for _ in $(seq 60); do healthy && break; sleep 0.5; done
healthy || { echo "the server did not answer; see $DOCKYARD_HOME/server.log" >&2; exit 1; }

.venv/bin/dockyard login --url "$url" --user admin --password-stdin < "$password_file" >/dev/null
if ! .venv/bin/dockyard images --json | grep -q '"name": "debian-12"'; then
  .venv/bin/dockyard admin images add dockyard/debian:bookworm --name debian-12
fi
# The PyTorch image of the catalog that builds offline: the CPU wheel from /opt/wheels.
if ! .venv/bin/dockyard images show pytorch-2.13-cpu --json | grep -q '"status": "ready"'; then
  echo "==> building the PyTorch CPU image (a few minutes the first time)"
  .venv/bin/dockyard admin images build pytorch-2.13-cpu
fi
.venv/bin/dockyard gpus
cat <<TXT

Dockyard is running at $url  (API docs: $url/docs)
  admin user: admin, password in $password_file
  try:  . .venv/bin/activate
        dockyard create --image pytorch-2.13-cpu --gpu-model A100-80GB --gpus 2 --name demo --wait
        dockyard check demo
        dockyard exec demo -- sh -c 'env | grep -E "NVIDIA|DOCKYARD"; df -h /root/data'
        dockyard stop demo --wait; dockyard start demo --no-gpu --wait; dockyard rm demo --yes
  stop the server:  kill \$(cat $pidfile)
TXT
