"""The test helpers' port choosers: ports chosen one after another never repeat, and a block
of consecutive ports never lies where outgoing connections take theirs."""

import socket

from tests.support.net import _ephemeral_range, consecutive_free_ports, free_port


def test_ports_chosen_one_after_another_are_distinct():
    # The kernel reuses a just-closed port now and then; over 3000 picks from a
    # ~28k range a repeat is all but certain unless free_port rules it out.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_blocks_of_consecutive_ports_are_disjoint_free_and_below_the_ephemeral_range():
    # bind(0) answers odd ports and connect() takes the even ones, so a block grown from
    # bind(0)'s port ran into a connection's (or its TIME_WAIT's) port under a busy suite.
    low, _ = _ephemeral_range()
    singles = {free_port() for _ in range(50)}
    taken: set[int] = set()
    for n in (3, 3, 2, 5) * 10:
        base = consecutive_free_ports(n)
        block = set(range(base, base + n))
        assert max(block) < low
        assert not block & taken and not block & singles
        taken |= block
        for port in block:  # free as the servers bind (SO_REUSEADDR)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
