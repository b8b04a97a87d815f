"""The faucet page in Debian's headless Chromium, driven over the DevTools protocol.

A stand-in ``window.ethereum`` (MetaMask cannot be installed here) records what the page
asks the wallet. The screenshot is saved under the test's tmp dir (``faucet-page.png``).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from faucet_fixtures import (  # type: ignore[no-redef]
    EXPLORER,
    UNIT,
    RunningFaucet,
    assert_no_key,
    wait_for_empty_pool,
)
from websockets.sync.client import ClientConnection, connect

from faucet.addresses import NOT_HEX
from pilotchain.chain import wait_for

pytestmark = pytest.mark.chain

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps dialling
# Google's hosts, which a closed network refuses.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1100,1300", "--remote-debugging-port=0"]
# Injected before any page script runs: records wallet requests and answers like MetaMask.
WALLET_STAND_IN = """
window.walletCalls = [];
window.ethereum = {
  isMetaMask: true,
  request: async (args) => { window.walletCalls.push(JSON.parse(JSON.stringify(args)));
                             return null; },
};
"""


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
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == ident:
                assert "error" not in message, message["error"]
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
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


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile and the wallet stand-in on every page."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed; run scripts/lib/install-test-deps.sh")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.is_file() and port_file.read_text().strip(), timeout=30,
                 what="Chromium to open its DevTools port")
        port = port_file.read_text().split()[0]
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(target for target in pages if target["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            tools = DevTools(socket)
            tools.send("Page.enable")
            tools.send("Page.addScriptToEvaluateOnNewDocument", source=WALLET_STAND_IN)
            yield tools
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_page_claims_shows_errors_and_adds_the_network(
        browser: DevTools, gunicorn_faucet: RunningFaucet, tmp_path: Path) -> None:
    faucet = gunicorn_faucet
    browser.send("Page.navigate", url=faucet.url + "/faucet")
    browser.wait_event("Page.loadEventFired")
    assert browser.evaluate("document.title") == "PilotChain faucet"
    assert browser.evaluate("document.getElementById('amount').textContent") == "1 PILOT"
    assert browser.evaluate("document.getElementById('wait').textContent") == \
        "24 hours per address"
    assert browser.evaluate("document.getElementById('balance').textContent").endswith(" PILOT")

    # A claim through the form shows the transaction hash, linked to the explorer.
    address = Account.create().address
    browser.load(f"document.getElementById('address').value = '{address}';"
                 "document.getElementById('claim-form').requestSubmit();")
    tx_hash = browser.evaluate("document.getElementById('tx-hash').textContent")
    assert len(tx_hash) == 66 and tx_hash.startswith("0x")
    assert browser.evaluate("document.getElementById('tx-link').href") == \
        f"{EXPLORER}/tx/{tx_hash}"
    assert browser.evaluate("document.getElementById('result-message').textContent") == \
        f"Sent 1 PILOT to {address}."
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    screenshot = tmp_path / "faucet-page.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.stat().st_size > 10_000
    page_html = browser.evaluate("document.documentElement.outerHTML")

    # The MetaMask button asks the wallet to add exactly this network.
    assert browser.evaluate("document.getElementById('add-network').hidden") is False
    browser.evaluate("document.getElementById('add-network').click()")
    calls = wait_for(lambda: browser.evaluate("window.walletCalls"), timeout=10,
                     what="the page to call window.ethereum.request")
    chain = faucet.chain
    assert calls == [{"method": "wallet_addEthereumChain", "params": [{
        "chainId": hex(chain.settings.chain_id),
        "chainName": chain.settings.network_name,
        "rpcUrls": [chain.rpc_url],
        "nativeCurrency": {"name": "PILOT", "symbol": "PILOT", "decimals": 18},
        "blockExplorerUrls": [EXPLORER],
    }]}]
    wait_for(lambda: browser.evaluate("document.getElementById('wallet-status').textContent")
             == "PilotChain is in your wallet.", timeout=10, what="the wallet status")

    # A bad address shows its error next to the form, and keeps what was typed.
    browser.load("document.getElementById('address').value = '0xnot-an-address';"
                 "document.getElementById('claim-form').requestSubmit();")
    assert browser.evaluate("document.getElementById('error').textContent.trim()") == NOT_HEX
    assert browser.evaluate("document.getElementById('address').value") == "0xnot-an-address"
    assert browser.evaluate("document.getElementById('tx-hash')") is None
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "faucet-page-error.png").write_bytes(base64.b64decode(shot["data"]))

    page_html += browser.evaluate("document.documentElement.outerHTML")
    assert_no_key(faucet.key, page_html, faucet.log_text(), where="the page or the log")
    wait_for_empty_pool(faucet.w3)
    assert faucet.w3.eth.get_balance(address) == UNIT
