#!/bin/bash
# Dockyard's container entrypoint (installed as /usr/local/bin/dockyard-entrypoint, run by
# tini as PID 1's child, as root).
#
# From the environment the platform injects:
#   DOCKYARD_AUTHORIZED_KEYS   public keys, one a line -> /root/.ssh/authorized_keys
#   DOCKYARD_SSH_PASSWORD      optional root password; without it SSH is key-only
#   DOCKYARD_JUPYTER_TOKEN     the secret the platform's proxy sends (header
#                              X-Dockyard-Proxy-Secret); JupyterLab starts only when it is set
#   DOCKYARD_JUPYTER_BASE_URL  default /
#   DOCKYARD_JUPYTER_PORT      default 8888
#
# The platform may have written package-mirror settings before the first start
# (/etc/pip.conf, apt sources, /etc/conda/.condarc, /etc/dockyard/mirrors.json) and an
# extra CA bundle, /usr/local/share/ca-certificates/dockyard-mirrors.crt, which is added to
# the system's trust store here.
#
# Starts sshd (port 22) and JupyterLab, each restarted by a small loop when it dies, logs
# in /var/log/dockyard/, then runs the user's command (or sleeps forever). Never prints
# the token or the password.
set -u

LOG_DIR=/var/log/dockyard
mkdir -p "$LOG_DIR" /root/data /run/sshd
chmod 700 /root

log() { printf '%s dockyard-entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$LOG_DIR/entrypoint.log"; }

# supervise NAME COMMAND...: run COMMAND again a second after it ends, forever.
supervise() {
    local name=$1
    shift
    while true; do
        "$@" >>"$LOG_DIR/$name.log" 2>&1
        log "$name exited with status $?; restarting in 1 s"
        sleep 1
    done
}

# --- the environment for SSH sessions (which do not inherit the container's) ----------
# /etc/environment (read through PAM by every SSH session, login shell or not) gets the
# variables whose values it can hold; /etc/profile.d (login shells) gets all of them.
# The secrets of this script are left out.
write_session_env() {
    local name value
    umask 077
    : >/etc/environment
    {
        echo "# Written by dockyard-entrypoint at container start: the container's environment."
        for name in $(compgen -e); do
            case $name in
                DOCKYARD_SSH_PASSWORD | DOCKYARD_JUPYTER_TOKEN | DOCKYARD_AUTHORIZED_KEYS | JUPYTER_TOKEN) continue ;;
                HOME | PWD | OLDPWD | SHLVL | HOSTNAME | TERM | USER | LOGNAME | SHELL | _) continue ;;
            esac
            value=${!name}
            [ "$name" = PATH ] || printf 'export %s=%q\n' "$name" "$value"
            case $value in
                *[$'\n'\"\'\\\$]*) ;;
                *) printf '%s="%s"\n' "$name" "$value" >>/etc/environment ;;
            esac
        done
    } >/etc/profile.d/01-dockyard-env.sh
    chmod 600 /etc/environment
    umask 022
}

# --- SSH --------------------------------------------------------------------------------
setup_ssh() {
    mkdir -p /root/.ssh
    chmod 700 /root/.ssh
    if [ -n "${DOCKYARD_AUTHORIZED_KEYS:-}" ]; then
        printf '%s\n' "$DOCKYARD_AUTHORIZED_KEYS" | sed -e 's/\r$//' -e '/^[[:space:]]*$/d' >/root/.ssh/authorized_keys
        chmod 600 /root/.ssh/authorized_keys
        log "installed $(wc -l </root/.ssh/authorized_keys) authorized key(s)"
    fi
    ssh-keygen -A >>"$LOG_DIR/sshd.log" 2>&1 || log "ssh-keygen -A failed"
    SSHD_OPTS=(-D -e -p 22 -o KbdInteractiveAuthentication=no -o PubkeyAuthentication=yes)
    if [ -n "${DOCKYARD_SSH_PASSWORD:-}" ]; then
        # chpasswd reads the password on stdin: it never appears in argv or a log.
        if printf 'root:%s\n' "$DOCKYARD_SSH_PASSWORD" | chpasswd; then
            SSHD_OPTS+=(-o PermitRootLogin=yes -o PasswordAuthentication=yes)
            log "root password set; password authentication enabled"
        else
            SSHD_OPTS+=(-o PermitRootLogin=prohibit-password -o PasswordAuthentication=no)
            log "setting the root password failed; SSH stays key-only"
        fi
    else
        SSHD_OPTS+=(-o PermitRootLogin=prohibit-password -o PasswordAuthentication=no)
    fi
    unset DOCKYARD_SSH_PASSWORD
}

# --- JupyterLab --------------------------------------------------------------------------
start_jupyter() {
    if [ -z "${DOCKYARD_JUPYTER_TOKEN:-}" ]; then
        log "DOCKYARD_JUPYTER_TOKEN is empty: JupyterLab not started"
        return
    fi
    local base_url=${DOCKYARD_JUPYTER_BASE_URL:-/} port=${DOCKYARD_JUPYTER_PORT:-8888}
    case $base_url in /*) ;; *) base_url=/$base_url ;; esac
    # JupyterLab trusts only the platform's proxy (dockyard_jupyter_auth): it has no token
    # of its own, so none is written into its pages. The secret goes through the
    # environment, not argv, so `ps` and the logs never show it.
    (
        export DOCKYARD_JUPYTER_SECRET=$DOCKYARD_JUPYTER_TOKEN
        export PYTHONPATH=/opt/dockyard${PYTHONPATH:+:$PYTHONPATH}
        unset DOCKYARD_JUPYTER_TOKEN DOCKYARD_AUTHORIZED_KEYS JUPYTER_TOKEN
        cd /root || exit 1
        supervise jupyter /opt/venv/bin/jupyter lab --ip=0.0.0.0 --port="$port" \
            --allow-root --no-browser --ServerApp.root_dir=/root \
            --ServerApp.base_url="$base_url" --ServerApp.terminals_enabled=True \
            --ServerApp.allow_remote_access=True --ServerApp.port_retries=0 \
            --ServerApp.identity_provider_class=dockyard_jupyter_auth.ProxyIdentityProvider \
            --IdentityProvider.token=
    ) &
    log "JupyterLab starting on port $port, base URL $base_url"
}

# --- an extra CA for the site's package mirrors ----------------------------------------
trust_mirror_ca() {
    [ -s /usr/local/share/ca-certificates/dockyard-mirrors.crt ] || return 0
    if update-ca-certificates >>"$LOG_DIR/entrypoint.log" 2>&1; then
        log "trusting the extra CA bundle of the package mirrors"
    else
        log "update-ca-certificates failed: the mirrors' extra CA is not trusted"
    fi
}

trust_mirror_ca
write_session_env
setup_ssh
supervise sshd /usr/sbin/sshd "${SSHD_OPTS[@]}" &
log "sshd starting on port 22"
start_jupyter
unset DOCKYARD_JUPYTER_TOKEN DOCKYARD_AUTHORIZED_KEYS

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec sleep infinity
