"""The test helpers' port chooser: ports chosen one after another never repeat."""

from tests.support.net import free_port


def test_ports_chosen_one_after_another_are_distinct():
    # The kernel reuses a just-closed port now and then; over 3000 picks from a
    # ~28k range a repeat is all but certain unless free_port rules it out.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)
