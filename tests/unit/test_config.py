"""Config parsing: sizes, the TOML file, flags over file, and the errors' field names."""

from __future__ import annotations

from pathlib import Path

import pytest

from geecache.config import (
    DEMO_GROUP, Config, format_size, load_file, parse_args, parse_size,
)
from geecache.errors import ConfigError


@pytest.mark.parametrize("text,expected", [
    (4096, 4096), ("4096", 4096), ("64MiB", 64 << 20), ("1GB", 10**9), ("1gib", 1 << 30),
    ("512k", 512_000), ("1.5KiB", 1536), (" 2 MB ", 2_000_000), ("10B", 10),
])
def test_parse_size_accepts_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MiB", "12 parsecs", "-1", 0, -5, True, 1.5, "1e3", None])
def test_parse_size_rejects_with_field(bad):
    with pytest.raises(ConfigError) as err:
        parse_size(bad, "groups[0].max_bytes")
    assert err.value.field == "groups[0].max_bytes"


def test_format_size():
    assert format_size(256 << 20) == "256MiB"
    assert format_size(1000) == "1000B"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "geecache.toml"
    p.write_text(text)
    return str(p)


def test_full_file(tmp_path):
    path = write(tmp_path, """
host = "127.0.0.2"
port = 9000
workers = 3
arena = "32MiB"
auth_token = "s3cret"
etcd = "http://127.0.0.1:2379, http://127.0.0.1:22379"
advertise = "127.0.0.2:9000"
lease_ttl = 5

[[groups]]
name = "scores"
max_bytes = "8MiB"
policy = "lru2"
ttl = 30
codec = "zstd"
sqlite = "scores.db"
table = "points"

[[groups]]
name = "users"
max_bytes = 1048576
loader = "tests.support.loaders:counting"
""")
    cfg = parse_args(["--config", path], environ={})
    assert (cfg.host, cfg.port, cfg.workers, cfg.arena) == ("127.0.0.2", 9000, 3, 32 << 20)
    assert cfg.auth_token == "s3cret"
    assert cfg.etcd == ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
    assert cfg.advertise == "127.0.0.2:9000" and cfg.lease_ttl == 5
    scores, users = cfg.groups
    assert (scores.name, scores.max_bytes, scores.policy, scores.ttl, scores.codec) == (
        "scores", 8 << 20, "lru2", 30, "zstd")
    # A relative database path is relative to the config file, not the cwd.
    assert scores.sqlite == str(tmp_path.resolve() / "scores.db") and scores.table == "points"
    assert users.loader == "tests.support.loaders:counting" and users.sqlite is None


def test_flags_override_file(tmp_path):
    path = write(tmp_path, 'port = 9000\nworkers = 3\narena = "32MiB"\n')
    cfg = parse_args(["--config", path, "--port", "9100", "--workers", "1", "--arena", "16MiB",
                      "--peers", "http://127.0.0.1:1,http://127.0.0.1:2", "--lease-ttl", "3"],
                     environ={})
    assert (cfg.port, cfg.workers, cfg.arena) == (9100, 1, 16 << 20)
    assert cfg.peers == ["http://127.0.0.1:1", "http://127.0.0.1:2"] and cfg.lease_ttl == 3


def test_demo_group_when_none_configured(tmp_path):
    cfg = parse_args(["--data-dir", str(tmp_path)], environ={})
    (g,) = cfg.groups
    assert g.name == DEMO_GROUP and g.demo and g.sqlite == str(tmp_path / "demo.db")


def test_auth_token_from_environment_but_flag_wins():
    assert parse_args([], environ={"GEECACHE_AUTH_TOKEN": "env"}).auth_token == "env"
    assert parse_args(["--auth-token", "flag"], environ={"GEECACHE_AUTH_TOKEN": "env"}).auth_token == "flag"
    assert parse_args([], environ={}).auth_token is None


GROUP = '[[groups]]\nname = "g"\nloader = "tests.support.loaders:counting"\n'


@pytest.mark.parametrize("text,field,reason", [
    ('colour = "blue"\n', "colour", "unknown setting"),
    ('port = "eighty"\n', "port", "expected an integer"),
    ('port = 70000\n', "port", "not a TCP port"),
    ('workers = 0\n', "workers", "between 1 and 1024"),
    ('arena = "lots"\n', "arena", "cannot parse size"),
    ('lease_ttl = 1\n', "lease_ttl", "at least 2"),
    ('etcd = "https://localhost:2379"\n', "etcd", "only http:// is supported"),
    ('advertise = "no host"\n', "advertise", "whitespace"),
    (GROUP + 'max_bytes = "64 lightyears"\n', "groups[0].max_bytes", "cannot parse size"),
    (GROUP + 'colour = 1\n', "groups[0].colour", "unknown field"),
    (GROUP + 'policy = "fifo"\n', "groups[0].policy", "unknown policy"),
    (GROUP + 'codec = "rar"\n', "groups[0].codec", "unknown codec"),
    (GROUP + 'ttl = -1\n', "groups[0].ttl", "must not be negative"),
    (GROUP + 'sqlite = "x.db"\n', "groups[0]", "exactly one source"),
    ('[[groups]]\nname = "g"\n', "groups[0]", "exactly one source"),
    ('[[groups]]\nname = "g"\nloader = "no_such_module_xyz:f"\n', "groups[0].loader", ""),
    ('[[groups]]\nname = "g"\nloader = "tests.support.loaders:nope"\n', "groups[0].loader", ""),
    ('[[groups]]\nname = "g"\nloader = "not a spec"\n', "groups[0].loader", ""),
    ('[[groups]]\nname = "g"\nsqlite = "/no/such/dir/x.db"\n', "groups[0].sqlite", "does not exist"),
    ('[[groups]]\nname = "g"\nsqlite = "x.db"\ntable = "kv; drop"\n', "groups[0].table", "identifier"),
    ('[[groups]]\nname = "a b"\nsqlite = "x.db"\n', "groups[0].name", "must be"),
    ('[[groups]]\nsqlite = "x.db"\n', "groups[0].name", "required"),
    (GROUP + GROUP, "groups[1].name", "duplicate group name"),
    (GROUP + '[[groups]]\nname = "h"\nsqlite = "x.db"\nmax_bytes = "1GiB"\n',
     "groups[1].max_bytes", "exceeds the arena"),
    ('groups = 3\n', "groups", "array of tables"),
    ('port = \n', "config", "not valid TOML"),
])
def test_invalid_file_names_the_field(tmp_path, text, field, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        parse_args(["--config", path], environ={})
    assert err.value.field == field
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{field}: ")


def test_invalid_flags_name_the_flag(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_args(["--arena", "big"], environ={})
    assert err.value.field == "--arena"
    with pytest.raises(ConfigError) as err:
        parse_args(["--lease-ttl", "1"], environ={})
    assert err.value.field == "--lease-ttl"
    with pytest.raises(ConfigError) as err:
        parse_args(["--tls-cert", str(tmp_path / "c.pem")], environ={})
    # The setting the user gave, as spelled; the missing partner spelled alike in the reason.
    assert err.value.field == "--tls-cert" and "needs --tls-key" in err.value.reason


def test_missing_file():
    with pytest.raises(ConfigError) as err:
        load_file("/no/such/geecache.toml")
    assert err.value.field == "config" and "cannot read" in err.value.reason


def test_item_limit_is_the_largest_group_limit(tmp_path):
    path = write(tmp_path, GROUP + 'item_limit = "2MiB"\n[[groups]]\nname = "h"\nsqlite = "x.db"\n'
                 'item_limit = "64KiB"\n')
    cfg = parse_args(["--config", path], environ={})
    assert cfg.item_limit == 2 << 20
    assert isinstance(cfg, Config)


def test_sqlite_file_that_is_not_a_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not a database file, not at all" * 100)
    path = write(tmp_path, '[[groups]]\nname = "g"\nsqlite = "junk.db"\n')
    with pytest.raises(ConfigError) as err:
        parse_args(["--config", path], environ={})
    assert err.value.field == "groups[0].sqlite" and "cannot open" in err.value.reason


def test_synchronous_is_full_by_default_normal_when_asked_and_sqlite_only(tmp_path):
    path = write(tmp_path, '[[groups]]\nname = "g"\nsqlite = "a.db"\n[[groups]]\nname = "h"\n'
                 'sqlite = "b.db"\nsynchronous = "normal"\n')
    cfg = parse_args(["--config", path], environ={})
    assert [g.synchronous for g in cfg.groups] == ["full", "normal"]
    for body, field in (('sqlite = "c.db"\nsynchronous = "off"\n', "groups[0].synchronous"),
                        ('loader = "os.path:basename"\nsynchronous = "full"\n', "groups[0].synchronous")):
        path = write(tmp_path, '[[groups]]\nname = "g"\n' + body)
        with pytest.raises(ConfigError) as err:
            parse_args(["--config", path], environ={})
        assert err.value.field == field


def test_busy_timeout_bounds_a_write_of_a_sqlite_group_and_is_sqlite_only(tmp_path):
    path = write(tmp_path, '[[groups]]\nname = "g"\nsqlite = "a.db"\n[[groups]]\nname = "h"\n'
                 'sqlite = "b.db"\nbusy_timeout = 0.5\n')
    cfg = parse_args(["--config", path], environ={})
    assert [g.busy_timeout for g in cfg.groups] == [5.0, 0.5]
    for body in ('sqlite = "c.db"\nbusy_timeout = 0\n', 'sqlite = "c.db"\nbusy_timeout = "soon"\n',
                 'loader = "os.path:basename"\nbusy_timeout = 1\n'):
        path = write(tmp_path, '[[groups]]\nname = "g"\n' + body)
        with pytest.raises(ConfigError) as err:
            parse_args(["--config", path], environ={})
        assert err.value.field == "groups[0].busy_timeout", body


# -- the settings table: every source, every float, the arena's rows -------------------------

from geecache.config import (  # noqa: E402
    GROUP_SETTINGS, HOST_SETTINGS, NUMBER, build_parser, default_process_rows, reference_table,
)

FLOAT_SETTINGS = [s for s in HOST_SETTINGS if s.kind is NUMBER]


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    path = write(tmp_path, "workers = 3\nlease_ttl = 7\nhost = \"127.0.0.3\"\n")
    env = {"GEECACHE_WORKERS": "5", "GEECACHE_LEASE_TTL": "8"}
    cfg = parse_args(["--config", path, "--workers", "6"], environ=env)
    assert cfg.workers == 6          # flag beats environment and file
    assert cfg.lease_ttl == 8        # environment beats file
    assert cfg.host == "127.0.0.3"   # file beats default
    assert cfg.port == 8001          # default
    # The file itself may come from the environment.
    assert parse_args([], environ={"GEECACHE_CONFIG": path}).workers == 3


def test_every_host_setting_has_a_flag_and_an_environment_variable():
    text = build_parser().format_help()
    for s in HOST_SETTINGS:
        assert s.flag in text and s.env in text
        assert s.env == "GEECACHE_" + s.name.upper()


def test_environment_values_are_parsed_and_named():
    cfg = parse_args([], environ={"GEECACHE_REUSEPORT": "yes", "GEECACHE_ARENA": "32MiB",
                                  "GEECACHE_PEERS": "http://127.0.0.1:1, http://127.0.0.1:2",
                                  "GEECACHE_HOT_SHARE": "0.25", "GEECACHE_WORKERS": ""})
    assert cfg.reuseport is True and cfg.arena == 32 << 20 and cfg.hot_share == 0.25
    assert cfg.peers == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    for env, reason in [({"GEECACHE_WORKERS": "many"}, "expected an integer"),
                        ({"GEECACHE_REUSEPORT": "perhaps"}, "true or false"),
                        ({"GEECACHE_PORT": "70000"}, "not a TCP port")]:
        with pytest.raises(ConfigError) as err:
            parse_args([], environ=env)
        assert err.value.field == next(iter(env)) and reason in err.value.reason


def test_bad_flag_values_are_config_errors_naming_the_flag():
    for argv, reason in [(["--port", "eighty"], "expected an integer"),
                         (["--graceful-timeout", "soon"], "expected a number")]:
        with pytest.raises(ConfigError) as err:
            parse_args(argv, environ={})
        assert err.value.field == argv[0] and reason in err.value.reason


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("setting", FLOAT_SETTINGS, ids=lambda s: s.name)
def test_float_settings_refuse_nan_and_inf_from_every_source(tmp_path, setting, bad):
    sources = [
        (["--config", write(tmp_path, f"{setting.name} = {bad}\n")], {}, setting.name),
        ([f"{setting.flag}={bad}"], {}, setting.flag),  # = : argparse would take -inf for a flag
        ([], {setting.env: bad}, setting.env),
    ]
    for argv, env, field in sources:
        with pytest.raises(ConfigError) as err:
            parse_args(argv, environ=env)
        assert err.value.field == field and "finite" in err.value.reason


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_group_ttl_refuses_nan_and_inf(tmp_path, bad):
    path = write(tmp_path, GROUP + f"ttl = {bad}\n")
    with pytest.raises(ConfigError) as err:
        parse_args(["--config", path], environ={})
    assert err.value.field == "groups[0].ttl" and "finite" in err.value.reason


def test_graceful_timeout_nan_is_refused():
    # nan compared false to everything, so it passed "must not be negative" and disabled draining.
    with pytest.raises(ConfigError) as err:
        parse_args(["--graceful-timeout", "nan"], environ={})
    assert err.value.field == "--graceful-timeout"


def test_log_level_is_a_checked_setting():
    assert parse_args([], environ={"GEECACHE_LOG_LEVEL": "warning"}).log_level == "warning"
    with pytest.raises(ConfigError) as err:
        parse_args([], environ={"GEECACHE_LOG_LEVEL": "verbose"})
    assert err.value.field == "GEECACHE_LOG_LEVEL" and "unknown log level" in err.value.reason
    with pytest.raises(ConfigError) as err:
        parse_args(["--log-level", "loud"], environ={})
    assert err.value.field == "--log-level"


def test_process_rows_leave_room_for_sigttin_and_must_hold_the_workers():
    cfg = parse_args(["--workers", "100"], environ={})
    assert cfg.process_rows == default_process_rows(100) == 204
    assert parse_args(["--workers", "2"], environ={}).process_rows == 64
    # 1024 workers: allowed, and rows for all of them (the arena had 64 whatever the config).
    assert parse_args(["--workers", "1024"], environ={}).process_rows == 2052
    with pytest.raises(ConfigError) as err:
        parse_args(["--workers", "65", "--process-rows", "64"], environ={})
    assert err.value.field == "--workers" and "--process-rows is 64" in err.value.reason
    # The registrar takes a row too.
    with pytest.raises(ConfigError) as err:
        parse_args(["--workers", "4", "--process-rows", "4", "--etcd", "127.0.0.1:2379"], environ={})
    assert err.value.field == "--workers" and "registrar" in err.value.reason


def test_defaults_match_the_library_defaults():
    """The config's defaults for the tunables are today's constructor defaults (no drift)."""
    import inspect

    from geecache.group import DEFAULT_FLIGHT_WAIT, DEFAULT_HOT_AFTER, DEFAULT_HOT_TTL, HOT_FRACTION
    from geecache.cluster.pool import HTTPPool
    from geecache.shm import Arena

    cfg = Config()
    pool = inspect.signature(HTTPPool).parameters
    assert cfg.peer_connect_timeout == pool["connect_timeout"].default
    assert cfg.peer_read_timeout == pool["read_timeout"].default
    assert (cfg.hot_ttl, cfg.flight_wait, cfg.hot_share) == (DEFAULT_HOT_TTL, DEFAULT_FLIGHT_WAIT, 1 / HOT_FRACTION)
    assert cfg.hot_after == DEFAULT_HOT_AFTER
    create = inspect.signature(Arena.create).parameters
    assert cfg.arena_shards == create["shards"].default
    assert default_process_rows(1) == create["max_procs"].default


def test_operations_doc_shows_the_settings_tables():
    """docs/operations.md carries the generated tables (scripts/settings_reference.py rewrites them)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert reference_table(HOST_SETTINGS) in doc
    assert reference_table(GROUP_SETTINGS) in doc


def test_tunables_reach_the_objects_that_use_them(tmp_path):
    """hot_share sizes each hot partition, hot_after each group's doorkeeper; the peer timeouts
    reach the pool (workers/groups.py)."""
    import asyncio

    from geecache.shm import Arena
    from workers.groups import build_groups, build_peers

    path = write(tmp_path, GROUP + 'max_bytes = "1MiB"\n')
    cfg = parse_args(["--config", path, "--hot-share", "0.25", "--peer-connect-timeout", "0.3",
                      "--peer-read-timeout", "4", "--peers", "http://127.0.0.1:1", "--hot-after", "3"], environ={})
    with Arena.create(8 << 20) as arena:
        assert build_groups(cfg, arena, arena)["g"]._doorkeeper.after == 3
        arena.configure_group("hot:g", (1 << 20) // 4)  # the same budget again: accepted
        with pytest.raises(ConfigError):
            arena.configure_group("hot:g", (1 << 20) // 8)  # the old fixed 1/8: not what was declared

        async def pool():
            peers = build_peers(cfg, arena)
            try:
                return peers.connect_timeout, peers.read_timeout
            finally:
                await peers.close()

        assert asyncio.run(pool()) == (0.3, 4.0)
