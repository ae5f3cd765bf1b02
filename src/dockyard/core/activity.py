"""Reading activity from what a container's kernel says about its sockets."""

ESTABLISHED = "01"


def has_established(proc_net_tcp: str, local_port: int) -> bool:
    """Whether /proc/net/tcp(6) text lists an established connection to `local_port`."""
    port = f"{local_port:04X}"
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and ":" in fields[1] and fields[1].rsplit(":", 1)[1] == port and fields[3] == ESTABLISHED:
            return True
    return False
