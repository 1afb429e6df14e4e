"""The package as a user gets it: a wheel, installed non-editable, run from another directory.

The wheel is built from a copy of the checkout (a build writes ``build/`` and
``*.egg-info`` into its source tree, which must not be this one), with this
environment's setuptools and no index (``--no-build-isolation --no-index``),
so the test needs no network.  It goes into a fresh venv; the dependencies
come from this environment through a ``.pth`` file written after the install,
so pip never sees (or offers to uninstall) the checkout's own editable install,
and the fresh venv's copy of ``geecache`` comes first on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.proc import REPO, Host, wait_until

pytestmark = pytest.mark.procs

#: Not part of a source tree a user would build from (or too big to copy).
# (*.so: an editable install builds the compiled hit path in place; a wheel builds its own.)
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "build", "dist", "*.egg-info", "run",
                                     "out", ".pytest_cache", ".hypothesis", "geecache-data", "*.db*", "*.so")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _build_wheel(tmp_path_factory, env=None) -> Path:
    src = tmp_path_factory.mktemp("src") / "geecache"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    (src / "geecache-data").mkdir()
    (src / "geecache-data" / "demo.db").write_bytes(b"a run from the checkout left this")
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(dist), str(src)], env=env)
    (found,) = dist.glob("geecache-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout that also holds a demo data dir, as a run leaves."""
    return _build_wheel(tmp_path_factory)


def _install(wheel: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)])
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    # Appended after the venv's own site-packages: its geecache wins, the dependencies resolve.
    Path(site, "zz_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return root


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed non-editable; dependencies from this environment."""
    return _install(wheel, tmp_path_factory)


_HIT_PATH = "import workers.dataplane.hitpath as h; print(h.available())"


def test_the_wheel_carries_the_compiled_hit_path(wheel, venv, tmp_path):
    if shutil.which(sysconfig.get_config_var("CC").split()[0]) is None:
        pytest.skip("no C compiler here: the wheel is pure Python")
    with zipfile.ZipFile(wheel) as z:
        assert any(n.startswith("geecache/_hitpath.") and n.endswith(".so") for n in z.namelist())
    python = str(venv / "bin" / "python")
    assert _run([python, "-c", _HIT_PATH], cwd=tmp_path, env=_env(venv)).stdout.split() == ["True"]


def test_a_failed_c_build_installs_the_pure_python_package(tmp_path_factory, tmp_path):
    # A compiler that fails: the optional extension is skipped, the install is not.
    env = dict(os.environ, CC="false", LDSHARED="false")
    wheel = _build_wheel(tmp_path_factory, env=env)
    with zipfile.ZipFile(wheel) as z:
        # (its type stub, geecache/_hitpath.pyi, is package data either way)
        assert not any(n.startswith("geecache/_hitpath.") and n.endswith((".so", ".pyd")) for n in z.namelist())
    venv = _install(wheel, tmp_path_factory)
    python = str(venv / "bin" / "python")
    assert _run([python, "-c", _HIT_PATH], cwd=tmp_path, env=_env(venv)).stdout.split() == ["False"]


def _env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR", "XDG_DATA_HOME", "VIRTUAL_ENV")
           and not k.startswith("GEECACHE_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_holds_the_packages_and_the_entry_point_only(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        tops = {n.split("/")[0] for n in names}
        # The demo data dir, tests, scripts, docs and supervisor.py stay out.
        assert tops == {"geecache", "workers", info}, tops
        assert z.read(f"{info}/top_level.txt").decode().split() == ["geecache", "workers"]
        assert "workers/worker.py" in names and "geecache/geecachepb/geecache.proto" in names
        assert "workers/dashboard.html" in names  # package data: the admin port's page
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        assert "geecache = geecache.host.main:main" in entry_points
        metadata = z.read(f"{info}/METADATA").decode()
        # The MIT text the metadata names, and PEP 561's marker: mypy reads the annotations.
        assert "MIT License" in z.read(f"{info}/licenses/LICENSE").decode()
        assert "geecache/py.typed" in names
        # The generated messages' types: the module itself names none of them.
        assert "geecache/geecachepb/geecache_pb2.pyi" in names
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "Requires-Dist: protobuf<8,>=5.27.2" in metadata
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata
    assert "Requires-Dist: uvloop" in metadata


def test_installed_command_serves_the_demo_from_another_directory(venv, tmp_path):
    env, cwd = _env(venv), tmp_path / "elsewhere"
    cwd.mkdir()
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "geecache")
    where = _run([python, "-c", "import importlib.metadata as m, geecache; "
                  "print(geecache.__file__); print(m.version('geecache'))"], cwd=cwd, env=env).stdout.split()
    assert where[0].startswith(str(venv)), where  # the installed copy, not the checkout
    version = _run([command, "--version"], cwd=cwd, env=env).stdout.split()
    assert version[:2] == ["geecache", where[1]], version
    assert "--workers" in _run([python, "-m", "geecache", "--help"], cwd=cwd, env=env).stdout
    # A folder holding a module named like one of the program's packages does not shadow it.
    (cwd / "workers.py").write_text("raise SystemExit('the working directory shadowed workers')\n")
    try:
        assert "--workers" in _run([python, "-m", "geecache", "--help"], cwd=cwd, env=env).stdout
    finally:
        (cwd / "workers.py").unlink()

    port = free_port()
    log_path = tmp_path / "host.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([command, "--workers", "1", "--port", str(port), "--arena", "32MiB"],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    host = Host(proc, port, log_path)
    try:
        def tom():
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}:\n{host.log()}")
            try:
                return host.get("/api?key=Tom")
            except OSError:
                return None
        assert wait_until(tom, 30, what="the installed host answering") == (200, b"630"), host.log()
        # The demo database went to the default data dir under the working directory.
        assert (cwd / "geecache-data" / "demo.db").is_file()
    finally:
        assert host.stop(signal.SIGTERM) == 0, host.log()
