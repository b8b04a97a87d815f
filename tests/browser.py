"""Debian's headless Chromium driven over the DevTools protocol, for the page tests
(tests/test_faucet_browser.py, tests/test_portal_browser.py)."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT

__all__ = [
    "BRAND_BLUE",
    "BROWSER_SECONDS",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "PHONE_WIDTH",
    "DevTools",
    "chromium",
    "the_shared_look",
]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Seconds Chromium may take to start, answer a command or load a page: a second or two on a
# quiet machine, much more beside other work on two cores.
BROWSER_SECONDS = 90
# As the machine notes say: without the background-networking flags Chromium keeps dialling
# Google's hosts, which a closed network refuses.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1100,1300", "--remote-debugging-port=0"]
# A small phone's viewport (CSS pixels).
PHONE_WIDTH = 360
# What the shared stylesheet (pilotchain/static/pilotchain.css) gives every page: its own
# copy, served by the app; the header in the brand's blue.
BRAND_BLUE = "rgb(36, 87, 197)"


class DevTools:
    """A minimal DevTools-protocol client for one page: commands and awaited events."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run ``method`` and return its result (events that arrive meanwhile are kept)."""
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=BROWSER_SECONDS))
            if message.get("id") == ident:
                assert "error" not in message, message["error"]
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = BROWSER_SECONDS) -> dict[str, Any]:
        """The next ``method`` event (kept or arriving within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"Chromium sent no {method} within {timeout:.0f} s"
            self.events.append(json.loads(self.socket.recv(timeout=remaining)))

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def load(self, action: str) -> None:
        """Run ``action`` (JavaScript that navigates) and wait until the new page has loaded."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.evaluate(action)
        self.wait_event("Page.loadEventFired")


@contextmanager
def chromium(profile: Path) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile in ``profile``, its first page enabled; stopped
    on leaving, whatever happened."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed; run scripts/lib/install-test-deps.sh")
    process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.is_file() and port_file.read_text().strip(),
                 timeout=BROWSER_SECONDS, what="Chromium to open its DevTools port")
        port = port_file.read_text().split()[0]
        targets = requests.get(f"http://127.0.0.1:{port}/json/list",
                               timeout=BROWSER_SECONDS).json()
        target = next(t for t in targets if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
            tools = DevTools(socket)
            tools.send("Page.enable")
            yield tools
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def the_shared_look(tools: DevTools, reload: Any, phone_shot: Path | None = None
                    ) -> dict[str, Any]:
    """What a page (loaded; ``reload()`` loads it again) shows of PilotChain's one visual
    language: the shared stylesheet served by the page's own app, the header's colour, the
    first Tab landing on the skip link with a visible focus ring, and, at a phone's width,
    nothing wider than the screen (wide tables scroll inside their box)."""
    look: dict[str, Any] = tools.evaluate("""(() => {
      const sheets = [...document.styleSheets].map(s => s.href || "");
      const own = sheets.filter(h => h.endsWith("/style/pilotchain.css"));
      return {stylesheet: own.length === 1 && new URL(own[0]).origin === location.origin,
              header: getComputedStyle(document.querySelector("header.top")).backgroundColor,
              external: sheets.filter(h => h && new URL(h).origin !== location.origin)};
    })()""")
    for kind in ("keyDown", "keyUp"):
        tools.send("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab",
                   windowsVirtualKeyCode=9)
    look["focus"] = tools.evaluate("""(() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return {element: el.className, outline: style.outlineStyle,
              visible: el.getBoundingClientRect().left >= 0};
    })()""")
    look["phone_overflow"] = at_phone_width(tools, reload, phone_shot)
    return look


def at_phone_width(tools: DevTools, reload: Any, shot: Path | None = None) -> int:
    """The page (``reload()`` loads it again) at a phone's width, saved as ``shot`` if given;
    how many pixels it is wider than the phone's screen (0 or less: nothing overflows)."""
    tools.send("Emulation.setDeviceMetricsOverride", width=PHONE_WIDTH, height=740,
               deviceScaleFactor=2, mobile=True)
    try:
        reload()
        overflow: int = tools.evaluate(f"document.documentElement.scrollWidth - {PHONE_WIDTH}")
        if shot is not None:
            picture = tools.send("Page.captureScreenshot", format="png",
                                 captureBeyondViewport=True)
            shot.write_bytes(base64.b64decode(picture["data"]))
        return overflow
    finally:
        tools.send("Emulation.clearDeviceMetricsOverride")


# axe-core, the accessibility engine (npm, pinned in package.json's devDependencies).
AXE = PROJECT_ROOT / "node_modules" / "axe-core" / "axe.min.js"


def serious_accessibility_problems(tools: DevTools) -> list[dict[str, Any]]:
    """What axe-core finds on the page as it stands, of impact serious or critical: each
    rule broken, with up to five of the elements that break it. (Injected over DevTools,
    which the page's Content-Security-Policy does not govern: the page itself loads
    nothing of it.)"""
    if not AXE.is_file():
        pytest.fail("axe-core is not installed; run npm ci in the project")
    tools.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = tools.evaluate("""
      axe.run(document, {resultTypes: ["violations"]}).then(result => result.violations
        .filter(v => v.impact === "serious" || v.impact === "critical")
        .map(v => ({rule: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))})))""")
    return found
