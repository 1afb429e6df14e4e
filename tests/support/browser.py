"""A real headless Chromium driven over the DevTools protocol, in real time (no virtual time:
with it every rate the page computes from two polls a second apart is 0).

``Browser`` starts Chromium on a free debugging port (stopped by pid), opens one page, and
offers ``evaluate`` (a JavaScript expression's value), ``wait_for`` (an expression until it
is truthy, with a deadline) and ``screenshot``.  The DevTools websocket is aiohttp's client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.support.net import free_port


class Browser:
    """Chromium with one page at *width* x *height*, run by an event loop of its own."""

    def __init__(self, chromium: str, profile: Path, width: int = 1400, height: int = 1100) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--remote-debugging-port={self.port}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.loop = asyncio.new_event_loop()
        self._ids = 0
        try:
            self.loop.run_until_complete(self._connect(width, height))
        except BaseException:
            self.close()
            raise

    async def _connect(self, width: int, height: int) -> None:
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                    pages = [t for t in await r.json() if t["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromium's debugging port never answered")
            await asyncio.sleep(0.1)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        await self._call("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    async def _call(self, method: str, params: dict | None = None) -> dict:
        self._ids += 1
        ident = self._ids
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"devtools socket: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == ident:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                return data["result"]

    def goto(self, url: str, timeout: float = 60.0) -> None:
        """Open *url* in the page and wait until it has loaded (the navigation is asynchronous)."""
        self.loop.run_until_complete(self._call("Page.navigate", {"url": url}))
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
                      timeout, f"{url} loaded")

    def evaluate(self, expression: str):
        """The value of a JavaScript *expression* in the page (awaited when it is a promise)."""
        result = self.loop.run_until_complete(self._call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}))
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "the page"):
        """Evaluate *expression* until it is truthy (its value), within *timeout* seconds of real time."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expression} still false after {timeout}s")
            self.loop.run_until_complete(asyncio.sleep(0.2))

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window) at *path*."""
        result = self.loop.run_until_complete(self._call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}))
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    def close(self) -> None:
        """Close the socket and stop Chromium (by pid)."""
        try:
            if hasattr(self, "session"):
                self.loop.run_until_complete(self.session.close())
        finally:
            self.loop.close()
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(20)
