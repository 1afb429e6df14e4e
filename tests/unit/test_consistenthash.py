"""The ring's promises: balance, minimal movement, order independence."""

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from geecache.cluster.consistenthash import DEFAULT_REPLICAS, Ring

KEYS = [f"key-{i}" for i in range(100_000)]
NODES = ["10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001"]


def owners(ring):
    return [ring.get(k) for k in KEYS]


def test_empty_ring_owns_nothing():
    ring = Ring()
    assert ring.get("a") is None
    assert ring.nodes == ()


def test_three_nodes_each_own_a_third_within_ten_percent():
    ring = Ring()
    ring.add(*NODES)
    counts = Counter(owners(ring))
    assert set(counts) == set(NODES)
    third = len(KEYS) / 3
    for node, n in counts.items():
        assert abs(n - third) <= 0.10 * third, (node, n)


def test_fourth_node_takes_at_most_a_quarter_plus_three_percent_all_to_it():
    ring = Ring()
    ring.add(*NODES)
    before = owners(ring)
    ring.add("10.0.0.4:8001")
    after = owners(ring)
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert moved, "a new member must take some keys"
    assert len(moved) <= (1 / 4 + 0.03) * len(KEYS)
    assert {a for _, a in moved} == {"10.0.0.4:8001"}


def test_rings_built_in_different_orders_agree():
    members = [f"127.0.0.1:{8000 + i}" for i in range(7)]
    a = Ring()
    a.add(*members)
    b = Ring()
    shuffled = members[:]
    random.Random(7).shuffle(shuffled)
    for m in shuffled:
        b.add(m)
    b.add("127.0.0.1:9999")
    b.remove("127.0.0.1:9999")
    assert a.nodes == b.nodes == tuple(sorted(members))
    assert owners(a)[:20_000] == owners(b)[:20_000]


@pytest.mark.procs
def test_mapping_is_fixed_across_processes():
    # xxh3 is unseeded, so this holds on every host and every run; Python's
    # hash() would change with PYTHONHASHSEED.
    ring = Ring()
    ring.add(*NODES)
    code = (
        "from geecache.cluster.consistenthash import Ring\n"
        f"r = Ring(); r.add(*{NODES!r})\n"
        "print(','.join(r.get(f'key-{i}') for i in range(500)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()
    assert out.split(",") == owners(ring)[:500]


def test_removal_moves_only_the_removed_nodes_keys():
    ring = Ring()
    ring.add(*NODES, "10.0.0.4:8001")
    before = owners(ring)
    ring.remove("10.0.0.2:8001")
    after = owners(ring)
    for b, a in zip(before, after):
        if b != "10.0.0.2:8001":
            assert a == b
        else:
            assert a != "10.0.0.2:8001"
    assert "10.0.0.2:8001" not in ring.nodes


def test_set_nodes_replaces_membership():
    ring = Ring()
    ring.add("a", "b")
    ring.set_nodes(["c"])
    assert ring.nodes == ("c",)
    assert ring.get("anything") == "c"


def test_add_is_idempotent_and_bad_members_are_refused():
    ring = Ring(replicas=8)
    ring.add("a", "a")
    assert ring.nodes == ("a",)
    with pytest.raises(ValueError):
        ring.add("")
    with pytest.raises(ValueError):
        ring.add(None)
    with pytest.raises(ValueError):
        Ring(replicas=0)
    assert Ring().replicas == DEFAULT_REPLICAS


def _table(ring):
    return ring._table


def test_a_derived_ring_is_the_ring_built_whole_through_random_joins_and_leaves():
    rng = random.Random(5)
    pool = [f"10.0.{i // 256}.{i % 256}:8001" for i in range(300)]
    members = set(rng.sample(pool, 40))
    ring = Ring(replicas=64)
    ring.set_nodes(members)
    for step in range(60):
        change = rng.choice(["join", "leave", "both", "many"])
        if change in ("join", "both"):
            members |= {rng.choice(pool)}
        if change in ("leave", "both") and len(members) > 2:
            members -= {rng.choice(sorted(members))}
        if change == "many":
            members = set(rng.sample(pool, rng.randint(2, 80)))
        before = _table(ring)
        derived = ring.with_nodes(members)
        whole = Ring(replicas=64)
        whole.set_nodes(members)
        assert _table(derived) == _table(whole), step
        assert _table(ring) == before  # the ring it came from is left as it was
        ring = derived


def test_splices_keep_the_hash_then_name_order_through_equal_hashes():
    # Real collisions of xxh3-64 are out of reach: the splices get a table with ties.
    from geecache.cluster.consistenthash import splice_in, splice_out

    table = sorted([(5, "b"), (5, "d"), (9, "a"), (1, "z"), (9, "c")])
    hashes, owners = [h for h, _ in table], [n for _, n in table]
    extra = sorted([(5, "a"), (5, "c"), (5, "e"), (9, "b"), (0, "q"), (10, "a")])
    h2, o2 = splice_in(hashes, owners, extra)
    assert list(zip(h2, o2)) == sorted(table + extra)
    h3, o3 = splice_out(h2, o2, sorted([(5, "b"), (5, "e"), (0, "q"), (9, "c")]))
    assert list(zip(h3, o3)) == sorted(set(table + extra) - {(5, "b"), (5, "e"), (0, "q"), (9, "c")})


def test_the_flat_import_path_is_the_cluster_ring():
    # The shared benchmark anchors (cluster_side_by_side.py) import the ring from here.
    from geecache import consistenthash as flat
    from geecache.cluster import consistenthash

    assert flat.Ring is consistenthash.Ring
    ring = flat.Ring()
    ring.add("http://a", "http://b")
    assert ring.get("k1") in {"http://a", "http://b"}
