from dockyard.core.activity import has_established

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0200D50A:0016 0100D50A:C5A2 01 00000000:00000000 02:0009E0A3 00000000     0        0 2 1
   2: 0100007F:22B8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""


def test_an_established_ssh_session_is_seen():
    assert has_established(TCP, 22)


def test_a_listening_socket_alone_is_not_activity():
    listening_only = "\n".join(TCP.splitlines()[:2])
    assert not has_established(listening_only, 22)


def test_other_ports_do_not_count():
    assert has_established(TCP, 8888)  # 0x22B8, established
    assert not has_established(TCP, 6006)
