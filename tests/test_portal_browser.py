"""The portal in Debian's headless Chromium, driven over the DevTools protocol, with an
injected EIP-1193 provider (``window.ethereum``) whose requests a real test key answers: the
page asks, a DevTools binding hands the request to this test, which signs with eth-account
(and sends transactions to the chain) and hands the answer back, as a wallet would.

Shown: sign-in; the participant's bill equal to ``billOf``; the first page of trades equal to
the recording's; the chart drawn (screenshot ``portal-participant.png`` under the test's tmp
dir); the CSV download equal to the chain; another participant's data refused (403); an
unregistered wallet told whom to ask; the operator registering a wallet from the page, on
chain afterwards; the operator's view of the services' health and of the entries the real
bridge and ingest dead-lettered; and the operator registering and deactivating a meter,
unregistering a participant's wallet and closing a billing period from the page, each
signed by the operator's key in the injected wallet and read back from the contract; in a
German browser, the page and the API's refusals it shows in German.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import mined
from browser import (
    BRAND_BLUE,
    BROWSER_SECONDS,
    DevTools,
    at_phone_width,
    chromium,
    serious_accessibility_problems,
    the_shared_look,
)
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from portal_web_fixtures import (
    CONTACT,
    REGISTERS,
    PortalServices,
    PortalWorld,
    as_figures,
    expected_community,
    expected_month,
    gsy_names,
    portal_env,
)

from pilotchain.chain import Sender, wait_for
from pilotchain.chain import connect as connect_chain
from pilotchain.metering import meter_id
from pilotchain.operator import ACTIVE
from pilotchain.trades import uuid_to_bytes32
from portal.web.config import WebSettings
from portal.web.i18n import GERMAN, GERMAN_ERRORS
from runner.portal import PortalWebService

pytestmark = [pytest.mark.chain, pytest.mark.browser]

# The page's wallet: each request goes to the test through the walletRequest binding.
PROVIDER = """
(() => {
  const pending = {};
  let next = 1;
  window.__walletReply = (id, result, error) => {
    const call = pending[id];
    delete pending[id];
    if (error) { call.reject(new Error(error)); } else { call.resolve(result); }
  };
  window.ethereum = {
    isMetaMask: true,
    request: ({ method, params }) => new Promise((resolve, reject) => {
      const id = next++;
      pending[id] = { resolve, reject };
      window.walletRequest(JSON.stringify({ id, method, params: params || [] }));
    }),
  };
})();
"""


class Wallet:
    """Answers the page's EIP-1193 requests with one key (swappable) and the real chain."""

    def __init__(self, browser: DevTools, rpc_url: str) -> None:
        self.browser = browser
        self.rpc_url = rpc_url
        self.account: LocalAccount = Account.create()
        self.requests: list[str] = []

    def answer(self, method: str, params: list[Any]) -> Any:
        self.requests.append(method)
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.account.address]
        if method == "personal_sign":
            text = bytes.fromhex(params[0].removeprefix("0x")).decode()
            assert params[1] == self.account.address
            signed = self.account.sign_message(encode_defunct(text=text))
            return "0x" + bytes(signed.signature).hex()
        if method == "eth_sendTransaction":
            tx = params[0]
            assert tx["from"] == self.account.address
            w3 = connect_chain(self.rpc_url)
            tx_hash = Sender(w3, self.account).send({"to": tx["to"], "data": tx["data"]})
            return tx_hash.to_0x_hex()
        raise AssertionError(f"the page asked the wallet for {method}")

    def serve(self, until: Callable[[], Any], timeout: float = 2 * BROWSER_SECONDS,
              what: str = "") -> Any:
        """Answer wallet requests until ``until()`` is truthy (a page's work with the portal:
        seconds, but Chromium beside other work on two cores is slow)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = [e for e in self.browser.events if e.get("method") == "Runtime.bindingCalled"]
            self.browser.events = [e for e in self.browser.events if e not in calls]
            for call in calls:
                request = json.loads(call["params"]["payload"])
                try:
                    reply = json.dumps(self.answer(request["method"], request["params"]))
                    self.browser.evaluate(f"window.__walletReply({request['id']}, {reply})")
                except AssertionError as error:
                    self.browser.evaluate(f"window.__walletReply({request['id']}, null, "
                                          f"{json.dumps(str(error))})")
                    raise
            done = until()
            if done:
                return done
            assert time.monotonic() < deadline, \
                f"timed out after {timeout:.0f} s waiting for {what}"
            try:
                self.browser.events.append(json.loads(self.browser.socket.recv(timeout=0.2)))
            except TimeoutError:
                pass


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    """Headless Chromium with the provider on every page."""
    with chromium(tmp_path_factory.mktemp("chromium-portal")) as tools:
        tools.send("Runtime.enable")
        tools.send("Runtime.addBinding", name="walletRequest")
        tools.send("Page.addScriptToEvaluateOnNewDocument", source=PROVIDER)
        yield tools


def text(page: DevTools, element: str) -> str:
    return str(page.evaluate(f"document.getElementById('{element}').textContent.trim()"))


def open_portal(page: DevTools, world: PortalWorld) -> None:
    page.send("Page.navigate", url=world.url + "/")
    page.wait_event("Page.loadEventFired")


def sign_in(page: DevTools, wallet: Wallet, world: PortalWorld) -> None:
    open_portal(page, world)
    wait_for(lambda: page.evaluate("document.body.dataset.loaded === 'true'"),
             timeout=BROWSER_SECONDS,
             what="the page to load who is signed in")
    page.evaluate("document.getElementById('sign-in').click()")
    wallet.serve(lambda: page.evaluate("document.body.dataset.ready === 'true' || "
                                       "document.getElementById('signin-error').textContent"),
                 what="the page to sign in")


def fetch(page: DevTools, path: str) -> dict[str, Any]:
    """What the page's own fetch of ``path`` gets (its cookie included)."""
    result: dict[str, Any] = page.evaluate(
        f"fetch({json.dumps(path)}).then(async r => ({{status: r.status, body: await r.text()}}))")
    return result


def screenshot(page: DevTools, path: Path) -> None:
    shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000


def test_a_participant_signs_in_and_sees_its_own_data(
        page: DevTools, portal_world: PortalWorld, tmp_path: Path) -> None:
    world = portal_world
    wallet = Wallet(page, world.target.net.rpc_url)
    wallet.account = world.alice
    sign_in(page, wallet, world)
    assert text(page, "signin-error") == ""
    assert wallet.requests == ["eth_requestAccounts", "personal_sign"]
    assert text(page, "who-text") == f"House 1 ({world.alice.address})"

    pid = uuid_to_bytes32(world.a)
    sold, bought, receivable, payable = world.contract().functions.billOf(pid).call()
    bill = json.loads(page.evaluate("document.getElementById('bill').dataset.raw"))
    assert [int(bill[k]) for k in ("energy_sold", "energy_bought", "money_receivable",
                                   "money_payable")] == [sold, bought, receivable, payable]
    mine = [str(r.trade_id) for r in world.records + world.metered
            if world.a in (str(r.seller), str(r.buyer))]
    shown = json.loads(page.evaluate("document.getElementById('trades').dataset.ids"))
    assert shown == mine[:50]
    assert text(page, "page-info") == f"page 1 of {-(-len(mine) // 50)} ({len(mine)} trades)"
    link = page.evaluate("document.querySelector('#trades a.tx-link').href")
    assert link.startswith("http://explorer.test/tx/0x")

    # The period at a glance: the open period is empty (period 1 was closed after every
    # trade), so the page shows period 1, whose figures are what the recording, the
    # registers and the rates give (computed in the test), shown in kWh and euros.
    assert page.evaluate("document.getElementById('month-period').value") == "1"
    month = json.loads(page.evaluate("document.getElementById('month').dataset.raw"))
    want = expected_month(world, world.a)
    assert as_figures(month, want) == want
    share = want["self_sufficiency"]
    assert share is not None and 0 < share < 10_000, "the test's participant draws from both"
    figures = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#month-figures > div')]"
        ".map(d => [d.className.split(' ')[0], d.querySelector('dd').firstChild.textContent]))")

    def euro(raw: int) -> str:  # euros from one on, cents below
        return f"{raw / 10**20:.2f} €" if abs(raw) >= 100 * 10**18 else f"{raw / 10**18:.2f} ct"

    assert figures == {
        "bought": f"{want['bought'] / 10**18:.3f} kWh",
        "from-grid": f"{want['from_grid'] / 10**18:.3f} kWh",
        "self-sufficiency": f"{(share + 50) // 100} %",
        "sold": f"{want['sold'] / 10**18:.3f} kWh",
        "savings": euro(want["savings"]) if want["savings"] >= 0
        else f"- {euro(-want['savings'])}",
        "earned": euro(want["earned"]) if want["earned"] >= 0
        else f"- {euro(-want['earned'])}",
        "balancing": f"{euro(want['balancing_charges'])} charged",
        "net": f"you receive {euro(want['net'])}" if want["net"] >= 0
        else f"you owe {euro(-want['net'])}",
    }
    reasons = page.evaluate("[...document.querySelectorAll('#balancing li')]"
                            ".map(li => li.textContent)")
    slots = [r.time_slot for r in world.metered]

    def at(slot: int) -> str:
        return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%d %H:%M UTC")

    assert reasons == [
        f"-0.12 ct You exported 0.007 kWh but sold 0.010 kWh in the slot from {at(slots[0])}: "
        "0.003 kWh short, charged at 40.00 ct/kWh.",
        f"-0.18 ct You imported 0.026 kWh but bought 0.020 kWh in the slot from {at(slots[1])}: "
        "0.006 kWh came from the grid, charged at the grid-supply rate of 30.00 ct/kWh."]

    # Names, not uuids: the counterparties and markets of the trades by gsy-e's names, the
    # ids only when asked for.
    names = gsy_names()
    cells = page.evaluate(
        "(() => { const name = (c) => c.querySelector('.named') ? "
        "c.querySelector('.named').firstChild.textContent : c.textContent; "
        "return [...document.querySelectorAll('#trades tbody tr')]"
        ".map(r => [name(r.cells[1]), name(r.cells[3])]); })()")
    first = [r for r in world.records + world.metered
             if world.a in (str(r.seller), str(r.buyer))][:50]
    assert cells == [
        [names.get(str(r.market), f"market {str(r.market)[:8]}…"),
         names.get(other := str(r.buyer if str(r.seller) == world.a else r.seller),
                   f"participant {other[:8]}…")] for r in first]
    assert page.evaluate("[...document.querySelectorAll('#trades .id')]"
                         ".every(e => e.offsetParent === null)") is True
    page.evaluate("document.getElementById('show-ids').click()")
    assert page.evaluate("[...document.querySelectorAll('#trades .id')]"
                         ".every(e => e.offsetParent !== null)") is True
    page.evaluate("document.getElementById('show-ids').click()")

    meter_line = page.evaluate("document.querySelector('#meter-state li').textContent")
    assert meter_line.endswith(f"(import {REGISTERS[-1][0]:,} Wh, export "
                               f"{REGISTERS[-1][1]:,} Wh)."), meter_line

    # Per day: the metered slots of each UTC day added up, as the readings and trades give.
    days: dict[str, dict[str, int]] = {}
    for index, trade in enumerate(world.metered):
        (imp0, exp0), (imp1, exp1) = REGISTERS[index], REGISTERS[index + 1]
        day = days.setdefault(datetime.fromtimestamp(trade.time_slot, UTC).strftime(
            "%Y-%m-%d"), {"slots": 0, "bought": 0, "sold": 0, "import_energy": 0,
                          "export_energy": 0})
        day["slots"] += 1
        day["bought" if str(trade.buyer) == world.a else "sold"] += trade.energy
        day["import_energy"] += (imp1 - imp0) * 10**15
        day["export_energy"] += (exp1 - exp0) * 10**15
    shown_days = json.loads(page.evaluate("document.getElementById('days').dataset.raw"))
    assert {d["day"]: {k: int(d[k]) for k in ("slots", "bought", "sold", "import_energy",
                                              "export_energy")} for d in shown_days} == days
    assert sum(int(d["charge"]) for d in shown_days) == want["balancing_charges"]

    # The chart: uPlot drew on a canvas, three series over the three metered slots.
    assert page.evaluate("document.querySelectorAll('#chart canvas').length") == 1
    assert page.evaluate("document.getElementById('chart-empty').hidden") is True
    screenshot(page, tmp_path / "portal-participant.png")

    # The CSV the page links to, downloaded with the page's session, holds the chain's bill.
    href = page.evaluate("document.getElementById('csv-bill').getAttribute('href')")
    csv_text = fetch(page, href)["body"].splitlines()
    values = dict(zip(csv_text[0].split(","), csv_text[1].split(","), strict=True))
    assert [int(values[k]) for k in ("energy_sold", "energy_bought", "money_receivable",
                                     "money_payable")] == [sold, bought, receivable, payable]
    trades_csv = fetch(page, f"/api/participants/{world.a}/trades.csv")["body"].splitlines()
    assert [line.split(",")[0] for line in trades_csv[1:]] == mine

    # Another participant's data, asked for from this session: 403 with the sentence.
    other = fetch(page, f"/api/participants/{world.b}/bill")
    assert other["status"] == 403
    assert json.loads(other["body"]) == {"error": "You may see only your own participant's data."}

    page.load("document.getElementById('sign-out').click()")
    assert page.evaluate("document.getElementById('signin').hidden") is False


def test_the_portal_has_the_faucets_look_on_a_desktop_and_a_phone(
        page: DevTools, portal_world: PortalWorld, tmp_path: Path) -> None:
    """The shared stylesheet from the portal itself, the first Tab on the skip link with a
    visible focus ring, and a participant's page (wide tables, the chart) no wider than a
    phone's screen: tables scroll in their own box (screenshots, desktop and phone)."""
    world = portal_world
    wallet = Wallet(page, world.target.net.rpc_url)
    wallet.account = world.alice
    sign_in(page, wallet, world)

    def reload() -> None:
        open_portal(page, world)
        wait_for(lambda: page.evaluate("document.body.dataset.ready === 'true'"),
                 timeout=BROWSER_SECONDS, what="the participant's page to load again")

    screenshot(page, tmp_path / "portal-month-desktop.png")
    assert serious_accessibility_problems(page) == []
    look = the_shared_look(page, reload, tmp_path / "portal-month-phone.png")
    assert (look["stylesheet"], look["header"], look["external"]) == (True, BRAND_BLUE, [])
    assert look["focus"] == {"element": "skip", "outline": "solid", "visible": True}
    assert look["phone_overflow"] <= 0
    page.load("document.getElementById('sign-out').click()")


def test_an_unregistered_wallet_gets_the_sentence(
        page: DevTools, portal_world: PortalWorld, tmp_path: Path) -> None:
    wallet = Wallet(page, portal_world.target.net.rpc_url)
    sign_in(page, wallet, portal_world)
    assert text(page, "signin-error") == (
        f"The wallet {wallet.account.address} is not registered to a participant of "
        f"{portal_world.target.net.settings.network_name}; ask {CONTACT} to register it.")
    assert page.evaluate("document.getElementById('participant').hidden") is True
    assert serious_accessibility_problems(page) == []  # the sign-in page, with its sentence
    screenshot(page, tmp_path / "portal-signin.png")

    def reload() -> None:
        sign_in(page, wallet, portal_world)
        wait_for(lambda: text(page, "signin-error") or None, timeout=BROWSER_SECONDS,
                 what="the sign-in page to say the wallet is not registered again")

    assert at_phone_width(page, reload, tmp_path / "portal-signin-phone.png") <= 0


def test_a_page_opened_at_another_address_asks_no_signature(
        page: DevTools, portal_world: PortalWorld, tmp_path: Path) -> None:
    """A portal whose PORTAL_DOMAIN is not the address the page was opened at (a copy of the
    page elsewhere, or a misconfiguration): the page says where to sign in and never asks the
    wallet to sign a message naming another site."""
    world = portal_world
    env = portal_env(world.target.net, world.target.record, world.database_url, tmp_path,
                     PORTAL_SECRET_FILE=str(tmp_path / "secret"),
                     PORTAL_DOMAIN="portal.pilot.test")
    service = PortalWebService(WebSettings.from_env(env), tmp_path / "pids", env)
    try:
        assert service.start(world.target.net)
        wallet = Wallet(page, world.target.net.rpc_url)
        wallet.account = world.alice
        sign_in(page, wallet, replace(world, service=service))
        assert text(page, "signin-error") == (
            "This portal signs you in at portal.pilot.test; open "
            "http://portal.pilot.test/ and sign in there.")
        assert wallet.requests == ["eth_requestAccounts"]
        assert page.evaluate("document.getElementById('signin').hidden") is False
    finally:
        service.stop()


def search_participants(page: DevTools, words: str) -> None:
    """Type ``words`` into the operator's search box."""
    page.evaluate("(() => { const box = document.getElementById('participant-search'); "
                  f"box.value = {json.dumps(words)}; "
                  "box.dispatchEvent(new Event('input')); })()")


def shown_participants(page: DevTools) -> list[str]:
    return list(page.evaluate("[...document.querySelectorAll('#participants tbody tr')]"
                              ".filter(r => !r.hidden).map(r => r.dataset.participant)"))


def open_nets(page: DevTools) -> dict[str, list[str]]:
    """Each participant's net of the open period: the API's amount, the cell's text and its
    colour class."""
    return dict(page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#participants tbody tr')]"
        ".map(r => [r.dataset.participant, [r.dataset.net, r.cells[2].textContent, "
        "r.cells[2].firstChild.className]]))"))


def test_the_operator_registers_a_wallet_from_the_page(
        page: DevTools, portal_world: PortalWorld, tmp_path: Path) -> None:
    world = portal_world
    wallet = Wallet(page, world.target.net.rpc_url)
    wallet.account = world.operator
    sign_in(page, wallet, world)
    assert text(page, "who-text") == f"Grid operator ({world.operator.address})"
    assert serious_accessibility_problems(page) == []  # the operator's page
    # Each form says what it will do before the wallet is asked; participants are found by
    # name as the operator types.
    assert page.evaluate("[...document.querySelectorAll('[aria-labelledby=tx-title] form')]"
                         ".every(f => f.querySelector('p.hint'))") is True
    assert text(page, "participant-count") == "3 of 3 participants shown"
    search_participants(page, "house 2")
    assert shown_participants(page) == [world.b]
    assert text(page, "participant-count") == "1 of 3 participants shown"
    search_participants(page, world.c[:13].upper())  # part of the id, any case
    assert shown_participants(page) == [world.c]
    search_participants(page, world.carol.address[5:20])  # part of the wallet
    assert shown_participants(page) == [world.c]
    search_participants(page, "unregister")  # the buttons' words are not searched
    assert shown_participants(page) == []
    assert text(page, "participant-count") == "0 of 3 participants shown"
    search_participants(page, "")
    assert sorted(shown_participants(page)) == sorted([world.a, world.b, world.c])
    # Each participant's net of the open period, in cents: C's two trades since period 1
    # was closed (owed 3 ct and one wei); A's and B's all went into period 1.
    assert page.evaluate("[...document.querySelectorAll('#participants thead th')]"
                         ".map(th => th.textContent)")[2] == "Net of the open period, ct"
    nets = open_nets(page)
    net = world.others[1].price - world.others[2].price
    assert nets == {world.a: ["0", "0.00", ""], world.b: ["0", "0.00", ""],
                    world.c: [str(net), "3.00", "gain"]}
    # The community's energy per slot: one row per balanced slot, in kWh.
    community = expected_community(world)
    assert page.evaluate("[...document.querySelectorAll('#community tbody tr')]"
                         ".map(r => [Number(r.dataset.slot), r.cells[2].textContent, "
                         "r.cells[5].textContent])") == [
        [row["slot"], f"{row['imported'] / 10**18:.3f}", f"{row['from_grid'] / 10**18:.3f}"]
        for row in community]
    assert community and page.evaluate(
        "document.getElementById('community-none').hidden") is True

    newcomer, house = Account.create(), uuid.uuid4()
    page.evaluate(f"document.getElementById('reg-participant').value = '{house}';"
                  f"document.getElementById('reg-wallet').value = '{newcomer.address}';"
                  "document.getElementById('register-form').requestSubmit();")
    tx_hash = wallet.serve(
        lambda: page.evaluate("document.getElementById('op-result').dataset.hash || "
                              "document.getElementById('op-error').textContent"),
        what="the operator's transaction to be sent")
    assert text(page, "op-error") == ""
    receipt = mined(world.w3, bytes.fromhex(tx_hash[2:]))
    assert receipt["status"] == 1
    assert receipt["from"] == world.operator.address
    assert world.contract().functions.participantOf(newcomer.address).call() == \
        uuid_to_bytes32(house)
    screenshot(page, tmp_path / "portal-operator.png")

    def reload() -> None:
        open_portal(page, world)
        wait_for(lambda: page.evaluate("document.body.dataset.ready === 'true'"),
                 timeout=BROWSER_SECONDS, what="the operator's page to load again")

    assert at_phone_width(page, reload, tmp_path / "portal-operator-phone.png") <= 0


def operator_sends(page: DevTools, wallet: Wallet, world: PortalWorld, action: str) -> Any:
    """Run ``action`` (JavaScript) on the operator's page, answer the wallet's requests, and
    return the mined receipt of the transaction the operator's key signed."""
    page.evaluate(action)
    tx_hash = wallet.serve(
        lambda: page.evaluate("document.getElementById('op-result').dataset.hash || "
                              "document.getElementById('op-error').textContent"),
        what=f"the operator's transaction of {action}")
    assert text(page, "op-error") == ""
    receipt = mined(world.w3, bytes.fromhex(tx_hash[2:]))
    assert (receipt["status"], receipt["from"]) == (1, world.operator.address)
    return receipt


def fill_form(page: DevTools, form: str, values: dict[str, str]) -> str:
    """JavaScript that fills the inputs ``values`` names and submits ``form``."""
    sets = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};"
                   for k, v in values.items())
    return f"{sets} document.getElementById({json.dumps(form)}).requestSubmit();"


def test_the_operator_sees_health_and_dead_letters_and_signs_meters_and_periods(
        page: DevTools, portal_world: PortalWorld, portal_services: PortalServices,
        tmp_path: Path) -> None:
    world = portal_world
    contract = world.contract()
    wallet = Wallet(page, world.target.net.rpc_url)
    wallet.account = world.operator
    sign_in(page, wallet, world)

    # The services' own health: the bridge and the ingest run, the subscriber and the closer
    # do not.
    health = json.loads(page.evaluate("document.getElementById('health').dataset.raw"))
    assert [(s["name"], s["up"]) for s in health] == \
        [("bridge", True), ("ingest", True), ("MQTT subscriber", False), ("closer", False)]
    rows = page.evaluate("[...document.querySelectorAll('#health tbody tr')]"
                         ".map(r => r.textContent)")
    assert any("closer" in row and "cannot be reached" in row for row in rows)
    # The dead letters, with the reasons the bridge and the ingest gave.
    shown = text(page, "dead-letters")
    for service, reason in portal_services.reasons.items():
        assert page.evaluate(
            f"document.querySelector('.dead-stream[data-service={service}]').dataset.count"
        ) == "1"
        assert reason in shown
    assert portal_services.bad_trade in shown and portal_services.bad_reading in shown
    screenshot(page, tmp_path / "portal-operator-health.png")

    # A meter registered from the page ...
    meter, house, meter_key = meter_id(uuid.uuid4()), uuid.uuid4(), Account.create()
    meter_text = str(uuid.UUID(bytes=meter[16:]))
    operator_sends(page, wallet, world, fill_form(page, "meter-form", {
        "meter-id": meter_text, "meter-signer": meter_key.address,
        "meter-participant": str(house)}))
    on_chain = contract.functions.meterOf(meter).call()
    assert (on_chain[0], bytes(on_chain[3]), on_chain[5]) == \
        (meter_key.address, uuid_to_bytes32(house), ACTIVE)
    # ... and deactivated, by default at the start of the chain's current slot.
    receipt = operator_sends(page, wallet, world, fill_form(page, "deactivate-form", {
        "deactivate-meter": meter_text}))
    mined_at = world.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    until = contract.functions.meterOf(meter).call()[5]
    assert until != ACTIVE and until % 900 == 0 and mined_at - 2 * 900 < until <= mined_at

    # A participant's wallet unregistered with the button on its row.
    operator_sends(page, wallet, world, (
        "[...document.querySelectorAll('#participants tbody tr')]"
        f".find(r => r.dataset.participant === '{world.b}').querySelector('button').click()"))
    assert int(contract.functions.walletOf(uuid_to_bytes32(world.b)).call(), 16) == 0
    assert contract.functions.participantOf(world.bob.address).call() == bytes(32)

    # The next billing period closed, one slot after the last.
    end = contract.functions.periodEnd(1).call() + 900
    periods = contract.functions.periodCount().call()
    operator_sends(page, wallet, world, fill_form(page, "close-form", {"close-end": str(end)}))
    assert contract.functions.periodCount().call() == periods + 1
    assert contract.functions.periodEnd(periods + 1).call() == end


def test_a_german_browser_gets_the_portal_in_german_and_can_switch(
        page: DevTools, portal_world: PortalWorld) -> None:
    """Accept-Language de: the sign-in page and a participant's page in German, numbers with
    a decimal comma, and none of the page's English sentences left on screen; the switch
    brings English back (and keeps it, in a cookie)."""
    world = portal_world
    agent = page.send("Browser.getVersion")["userAgent"]
    page.send("Emulation.setUserAgentOverride", userAgent=agent,
              acceptLanguage="de-DE,de;q=0.9,en;q=0.5")
    try:
        wallet = Wallet(page, world.target.net.rpc_url)
        wallet.account = world.alice
        open_portal(page, world)
        wait_for(lambda: page.evaluate("document.body.dataset.loaded === 'true'"),
                 timeout=BROWSER_SECONDS, what="the page to load who is signed in")
        if page.evaluate("document.getElementById('who').hidden") is False:
            page.load("document.getElementById('sign-out').click()")  # the operator's
        assert page.evaluate("document.documentElement.lang") == "de"
        assert text(page, "sign-in") == "Mit der Wallet anmelden"
        sign_in(page, wallet, world)
        month = json.loads(page.evaluate("document.getElementById('month').dataset.raw"))
        bought = page.evaluate(
            "document.querySelector('#month-figures .bought dd').firstChild.textContent")
        assert bought == f"{int(month['bought']) / 10**18:.3f} kWh".replace(".", ",")
        assert page.evaluate("document.querySelector('#month-figures .bought dt')"
                             ".textContent") == "Aus der Gemeinschaft gekauft"
        shown = page.evaluate("document.body.innerText")
        english = [sentence.split("{")[0].strip() for sentence, german in GERMAN.items()
                   if sentence != german and len(sentence.split("{")[0].strip()) >= 8]
        assert [sentence for sentence in english if sentence in shown] == []
        assert "Sie haben im Zeitfenster ab" in shown  # the balancing reasons
        assert page.evaluate("document.querySelector('.pdf-link').href").endswith("?lang=de")
        # The operator's participants in German: the net column (decimal comma) and the
        # search with its count, and no English left in that part of the page.
        page.load("document.getElementById('sign-out').click()")
        wallet.account = world.operator
        sign_in(page, wallet, world)
        assert page.evaluate("[...document.querySelectorAll('#participants thead th')]"
                             ".map(th => th.textContent)")[:3] == [
            "Teilnehmer", "Wallet", "Saldo der offenen Periode, ct"]
        assert open_nets(page)[world.c][1] == "3,00"
        search_participants(page, world.c[:8])
        assert shown_participants(page) == [world.c]
        assert text(page, "participant-count") == "1 von 3 Teilnehmern angezeigt"
        listed = page.evaluate(
            "document.getElementById('participants-title').closest('section').innerText")
        assert "Saldo der offenen Abrechnungsperiode" in listed
        assert [sentence for sentence in english if sentence in listed] == []
        page.load("document.getElementById('sign-out').click()")
        wallet.account = world.alice
        sign_in(page, wallet, world)
        page.load("document.querySelector('nav.languages a[hreflang=en]').click()")
        wait_for(lambda: page.evaluate("document.body.dataset.ready === 'true'"),
                 timeout=BROWSER_SECONDS, what="the page to load in English")
        assert page.evaluate("document.documentElement.lang") == "en"
        assert "Bought from the community" in page.evaluate("document.body.innerText")
        # The choice is kept: the next visit is English although the browser prefers German.
        open_portal(page, world)
        wait_for(lambda: page.evaluate("document.body.dataset.ready === 'true'"),
                 timeout=BROWSER_SECONDS, what="the page to load again")
        assert page.evaluate("document.documentElement.lang") == "en"
        page.load("document.getElementById('sign-out').click()")
    finally:
        page.send("Emulation.setUserAgentOverride", userAgent=agent, acceptLanguage="en")


def test_a_german_browser_gets_the_apis_refusals_in_german(
        page: DevTools, portal_world: PortalWorld) -> None:
    """Accept-Language de: the API's sentences the page shows as they come (an unregistered
    wallet's sign-in, an operator's form the portal refuses) are German, no English left."""
    world = portal_world
    english = [template.split("{")[0].strip() for template in GERMAN_ERRORS
               if len(template.split("{")[0].strip()) >= 8]
    agent = page.send("Browser.getVersion")["userAgent"]
    page.send("Emulation.setUserAgentOverride", userAgent=agent,
              acceptLanguage="de-DE,de;q=0.9,en;q=0.5")
    # The browser's language only: no choice of the switch kept from an earlier visit.
    page.send("Network.deleteCookies", name="pilotchain_lang", url=world.url + "/")
    try:
        wallet = Wallet(page, world.target.net.rpc_url)
        open_portal(page, world)
        wait_for(lambda: page.evaluate("document.body.dataset.loaded === 'true'"),
                 timeout=BROWSER_SECONDS, what="the page to load who is signed in")
        if page.evaluate("document.getElementById('who').hidden") is False:
            page.load("document.getElementById('sign-out').click()")
        sign_in(page, wallet, world)
        refused = text(page, "signin-error")
        assert refused == (
            f"Die Wallet {wallet.account.address} ist keinem Teilnehmer von "
            f"{world.target.net.settings.network_name} zugeordnet; bitten Sie {CONTACT}, sie "
            "zu registrieren.")
        assert [sentence for sentence in english if sentence in refused] == []

        wallet.account = world.operator
        sign_in(page, wallet, world)
        page.evaluate(fill_form(page, "register-form", {
            "reg-participant": str(uuid.uuid4()), "reg-wallet": "0xnot"}))
        wallet.serve(lambda: text(page, "op-error"),
                     what="the portal to refuse the operator's form")
        refused = text(page, "op-error")
        assert refused == (
            "Die Angabe '0xnot' (Wallet) ist keine Ethereum-Adresse (0x und 40 "
            "Hexadezimalziffern, in gemischter Schreibung mit gültiger Prüfsumme).")
        assert [sentence for sentence in english if sentence in refused] == []
        assert "wallet" not in refused
        page.load("document.getElementById('sign-out').click()")
    finally:
        page.send("Emulation.setUserAgentOverride", userAgent=agent, acceptLanguage="en")
