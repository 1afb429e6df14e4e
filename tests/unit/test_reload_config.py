"""What a SIGHUP may change and what a warm restart may reattach: the config side, in-process.

The processes themselves (a roll of the workers under load, a warm restart)
are in tests/host/test_reload.py.
"""

from __future__ import annotations

import copy
import logging


from geecache.config import parse_args
from geecache.host import reload, warm

LOADER = "tests.support.loaders:counting"


def _cfg(tmp_path, text: str, *argv: str, name: str = "h.toml"):
    path = tmp_path / name
    path.write_text(text)
    return parse_args(["--config", str(path), *argv], environ={})


GROUPS = (f'[[groups]]\nname = "a"\nloader = "{LOADER}"\nmax_bytes = "1MiB"\n'
          f'[[groups]]\nname = "b"\nloader = "{LOADER}"\nmax_bytes = "2MiB"\nttl = 5\n')


def test_live_settings_change_and_fixed_ones_are_kept_with_a_log_line(tmp_path, caplog):
    started = _cfg(tmp_path, "workers = 2\narena = \"32MiB\"\nport = 0\n" + GROUPS)
    running = copy.deepcopy(started)
    running.port = 43210  # resolved at bind
    asked = _cfg(tmp_path, "workers = 3\narena = \"64MiB\"\nport = 0\nlog_level = \"debug\"\n"
                 + GROUPS.replace('max_bytes = "2MiB"\nttl = 5', 'max_bytes = "4MiB"\nttl = 7'))
    with caplog.at_level(logging.INFO, "geecache.supervisor"):
        new = reload.merge(running, started, asked)
    assert (new.workers, new.log_level) == (3, "debug")
    assert (new.arena, new.port) == (32 << 20, 43210)         # fixed: the running values
    assert (new.groups[1].max_bytes, new.groups[1].ttl) == (2 << 20, 7)
    text = caplog.text
    assert "arena cannot change while the host runs (64MiB asked, 32MiB kept)" in text
    assert "groups[1].max_bytes cannot change" in text
    assert "port cannot change" not in text                  # 0 asked again: nothing new asked
    assert "workers 2 → 3" in text and "groups[1].ttl 5.0 → 7.0" in text


def test_groups_keep_their_order_and_membership(tmp_path, caplog):
    started = _cfg(tmp_path, GROUPS)
    asked = _cfg(tmp_path, GROUPS.split("[[groups]]\nname = \"b\"")[0]
                 + f'[[groups]]\nname = "c"\nloader = "{LOADER}"\n')
    with caplog.at_level(logging.INFO, "geecache.supervisor"):
        new = reload.merge(copy.deepcopy(started), started, asked)
    assert [g.name for g in new.groups] == ["a", "b"]
    assert "new groups (c)" in caplog.text and "group b is no longer in the config" in caplog.text


def test_a_bad_file_keeps_the_running_config(tmp_path, caplog):
    started = _cfg(tmp_path, GROUPS)
    (tmp_path / "h.toml").write_text("workers = 0\n")
    with caplog.at_level(logging.INFO, "geecache.supervisor"):
        assert reload.reread(["--config", str(tmp_path / "h.toml")], {}, started, started) is None
    assert "SIGHUP: config error: workers: " in caplog.text and "running configuration stays" in caplog.text


def test_the_token_never_reaches_the_log(tmp_path, caplog):
    started = _cfg(tmp_path, GROUPS, "--auth-token", "old-secret")
    asked = _cfg(tmp_path, GROUPS, "--auth-token", "new-secret")
    with caplog.at_level(logging.INFO, "geecache.supervisor"):
        reload.merge(copy.deepcopy(started), started, asked)
    assert "secret" not in caplog.text and "auth_token (set) → (set)" in caplog.text


def test_warm_fingerprint_names_the_first_difference(tmp_path):
    base = _cfg(tmp_path, 'arena = "32MiB"\n' + GROUPS)
    left = warm.record(base)
    assert warm.why_not(left, _cfg(tmp_path, 'arena = "32MiB"\n' + GROUPS)) is None
    # A codec does not change what a cached value means: still compatible.
    assert warm.why_not(left, _cfg(tmp_path, 'arena = "32MiB"\n' + GROUPS + 'codec = "zstd"\n')) is None
    cases = [
        ('arena = "64MiB"\n' + GROUPS, "arena was 32MiB, is now 64MiB"),
        ('arena = "32MiB"\narena_shards = 4\n' + GROUPS, "arena_shards was 8, is now 4"),
        ('arena = "32MiB"\n' + GROUPS.replace('"2MiB"', '"3MiB"'), "groups[1] (b) max_bytes was 2MiB, is now 3MiB"),
        ('arena = "32MiB"\n' + GROUPS.replace("ttl = 5", "ttl = 6"), "groups[1] (b) ttl was 5.0, is now 6.0"),
        ('arena = "32MiB"\n' + GROUPS.replace(f'"{LOADER}"\nmax_bytes = "2MiB"',
                                             '"tests.support.loaders:sync_upper"\nmax_bytes = "2MiB"'),
         "groups[1] (b) source was 'loader tests.support.loaders:counting'"),
        ('arena = "32MiB"\n' + GROUPS.split('[[groups]]\nname = "b"')[0], "the groups were a, b; now a"),
    ]
    for text, reason in cases:
        why = warm.why_not(left, _cfg(tmp_path, text))
        assert why and why.startswith(reason), (text, why)
    assert warm.difference({**left, "layout": -1}, warm.fingerprint(base)).startswith("its layout is version -1")
    # An arena left by code with fewer counters per stat row: this code's rows would not fit.
    fewer = {**left, "geometry": {**left["geometry"], "stat_fields": left["geometry"]["stat_fields"] - 2}}
    assert warm.difference(fewer, warm.fingerprint(base)).startswith("stat_fields was ")


def test_a_warm_restart_knows_how_long_the_host_was_away():
    import time

    left = {"stopped_mono_ns": time.monotonic_ns() - 4_000_000_000}
    assert 3.9 <= (time.monotonic_ns() - warm.away_since_ns(left)) / 1e9 < 60
    # Left by a version that recorded only the wall clock.
    since = warm.away_since_ns({"stopped_at": time.time() - 8})
    assert 7.9 <= (time.monotonic_ns() - since) / 1e9 < 60


def test_warm_with_etcd_is_refused_after_the_lease_could_have_expired(tmp_path):
    cfg = _cfg(tmp_path, GROUPS, "--etcd", "127.0.0.1:2379", "--lease-ttl", "10")
    left = warm.record(cfg, stopped_at=1000.0)
    assert warm.why_not(left, cfg, now=1005.0) is None
    assert "longer than the etcd lease_ttl (10s)" in warm.why_not(left, cfg, now=1010.0)
