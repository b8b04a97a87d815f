"""The faucet page in Debian's headless Chromium, driven over the DevTools protocol.

A stand-in ``window.ethereum`` (MetaMask cannot be installed here) records what the page
asks the wallet. The screenshot is saved under the test's tmp dir (``faucet-page.png``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import (
    BRAND_BLUE,
    DevTools,
    chromium,
    serious_accessibility_problems,
    the_shared_look,
)
from eth_account import Account
from faucet_fixtures import (  # type: ignore[no-redef]
    EXPLORER,
    UNIT,
    RunningFaucet,
    assert_no_key,
    wait_for_empty_pool,
)

from faucet.addresses import NOT_HEX
from pilotchain.chain import wait_for

pytestmark = pytest.mark.chain

# Injected before any page script runs: records wallet requests and answers like MetaMask.
WALLET_STAND_IN = """
window.walletCalls = [];
window.ethereum = {
  isMetaMask: true,
  request: async (args) => { window.walletCalls.push(JSON.parse(JSON.stringify(args)));
                             return null; },
};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile and the wallet stand-in on every page."""
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as tools:
        tools.send("Page.addScriptToEvaluateOnNewDocument", source=WALLET_STAND_IN)
        yield tools


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

    # The portal's look: the shared stylesheet from the faucet itself, keyboard first, and a
    # phone sees the whole page.
    def reload() -> None:
        browser.send("Page.navigate", url=faucet.url + "/faucet")
        browser.wait_event("Page.loadEventFired")

    assert serious_accessibility_problems(browser) == []
    look = the_shared_look(browser, reload, tmp_path / "faucet-page-phone.png")
    assert (look["stylesheet"], look["header"], look["external"]) == (True, BRAND_BLUE, [])
    assert look["focus"] == {"element": "skip", "outline": "solid", "visible": True}
    assert look["phone_overflow"] <= 0
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "faucet-page-desktop.png").write_bytes(base64.b64decode(shot["data"]))

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
    calls = wait_for(lambda: browser.evaluate("window.walletCalls"), timeout=60,
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
             == "PilotChain is in your wallet.", timeout=60, what="the wallet status")

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
