"""FunctionSource and load_source: any function as a read-only source.

groupcache's ``GetterFunc``: the user says how to load a key, the cache does
the rest.  ``load_source("module:function")`` is the config/CLI spelling
(the gunicorn/uvicorn convention).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any, Callable

from ..errors import ConfigError, GeeCacheError, LoadError
from .base import Storage


class FunctionSource(Storage):
    """Wraps ``fn(key) -> bytes | str | None`` (sync or async) as a read-only Storage.

    ``str`` results are encoded as UTF-8 and None means "not found".  A sync
    *fn* runs in a thread by default (``in_thread=True``), because a loader
    that blocks on I/O would otherwise stall every request of the worker;
    pass ``in_thread=False`` for a fast pure function to skip the hop.
    *executor* is the thread pool it runs in (None: asyncio's default); a
    worker gives every loader one bounded pool of its own (``load_threads``).
    Exceptions from *fn* reach the caller as LoadError with the cause chained
    (the package's own errors, e.g. NotFoundError, pass through unchanged).
    """

    readonly = True

    def __init__(self, fn: Callable[[str], Any], *, in_thread: bool = True, executor=None) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionSource needs a callable, got {type(fn).__name__}")
        self._fn = fn
        self._in_thread = in_thread and not _is_async(fn)
        self._executor = executor
        self.name = _describe(fn)

    async def get(self, key: str) -> bytes | None:
        try:
            if self._in_thread:
                result = await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, key)
            else:
                result = self._fn(key)
            if inspect.isawaitable(result):
                result = await result
        except GeeCacheError:
            raise
        except Exception as exc:
            raise LoadError(f"loader {self.name} failed for key {key!r}: {exc!r}") from exc
        if result is None or isinstance(result, bytes):
            return result
        if isinstance(result, str):
            return result.encode("utf-8")
        if isinstance(result, (bytearray, memoryview)):
            return bytes(result)
        raise LoadError(
            f"loader {self.name} returned {type(result).__name__} for key {key!r}; "
            "expected bytes, str or None"
        )

    def __repr__(self) -> str:
        return f"FunctionSource({self.name})"


def _is_async(fn: Callable) -> bool:
    call = getattr(fn, "__call__", None)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _describe(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}" if module else name


def load_source(spec: str, **kwargs: Any) -> FunctionSource:
    """The FunctionSource for ``"package.module:attr.path"``; ConfigError("loader", ...) if bad.

    The module is imported with the current ``sys.path``; a CLI that wants
    modules in the working directory found must put it there first.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError("loader", f"{spec!r} is not of the form 'module:function'")
    module_name, _, attr_path = spec.partition(":")
    parts = attr_path.split(".")
    if not all(p.isidentifier() for p in module_name.split(".")) or not all(
        p.isidentifier() for p in parts
    ):
        raise ConfigError("loader", f"{spec!r} is not of the form 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("loader", f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module itself raised while importing
        raise ConfigError("loader", f"importing {module_name!r} raised {exc!r}") from exc
    for i, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            where = ".".join([module_name] + parts[:i])
            raise ConfigError("loader", f"{where!r} has no attribute {part!r}") from None
    if not callable(target):
        raise ConfigError("loader", f"{spec!r} is a {type(target).__name__}, not a callable")
    return FunctionSource(target, **kwargs)
