"""The rules that keep instances off the host and off metadata addresses."""

from dockyard.runtimes.host_firewall import METADATA, rules


def test_replies_pass_first_then_metadata_and_host_are_dropped_except_open_ports():
    made = rules(["10.213.0.0/16"], [3141])
    assert made[0] == ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    assert made[1] == ["-s", "10.213.0.0/16", "-d", METADATA, "-j", "DROP"]
    opened = made.index(["-s", "10.213.0.0/16", "-p", "tcp", "--dport", "3141", "-m", "addrtype",
                         "--dst-type", "LOCAL", "-j", "RETURN"])
    dropped = made.index(["-s", "10.213.0.0/16", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"])
    assert opened < dropped == len(made) - 1


def test_every_pool_is_covered():
    made = rules(["10.213.0.0/16", "10.214.0.0/16"], [])
    assert {rule[1] for rule in made[1:]} == {"10.213.0.0/16", "10.214.0.0/16"}
