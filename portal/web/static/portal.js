// The portal page: sign-in with the wallet (EIP-4361 through window.ethereum, EIP-1193), then
// the participant's or the operator's view, filled from the portal's JSON API.
"use strict";

const state = { csrf: "", me: null, page: 1, perPage: 50 };
const $ = (id) => document.getElementById(id);
const SCALE = 1e18;

function kwh(raw) { return raw === null || raw === undefined ? "" : (Number(raw) / SCALE).toFixed(3); }
function cents(raw) { return raw === null || raw === undefined ? "" : (Number(raw) / SCALE).toFixed(2); }

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { "Accept": "application/json" }, ...options };
  if (init.method === "POST") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRFToken"] = state.csrf;
    init.body = JSON.stringify(options.body || {});
  }
  const response = await fetch(path, init);
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: "The portal sent no answer; try again." }; }
  if (!response.ok) { throw new Error(body.error || `The portal answered ${response.status}.`); }
  return body;
}

function sameHost(host) { return host.toLowerCase().replace(/:(80|443)$/, ""); }

function utf8Hex(text) {
  return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) { td.appendChild(cell); } else { td.textContent = cell; }
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows.map(row));
}

async function signIn() {
  $("signin-error").textContent = "";
  if (!window.ethereum) {
    $("signin-error").textContent = "No browser wallet was found; install MetaMask (or another wallet) and reload this page.";
    return;
  }
  try {
    const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
    const address = accounts[0];
    const { message, domain } = await api("/api/auth/challenge", { method: "POST", body: { address } });
    // The message names the portal's configured address (PORTAL_DOMAIN), never the one this
    // page was opened at; if they differ the wallet would rightly warn of phishing, so say
    // where to go instead of asking it to sign.
    if (sameHost(domain) !== sameHost(window.location.host)) {
      $("signin-error").textContent = `This portal signs you in at ${domain}; open ${window.location.protocol}//${domain}/ and sign in there.`;
      return;
    }
    const signature = await window.ethereum.request({ method: "personal_sign", params: [utf8Hex(message), address] });
    const me = await api("/api/auth/verify", { method: "POST", body: { message, signature } });
    state.csrf = me.csrf_token;
    await start();
  } catch (error) {
    $("signin-error").textContent = error.message || String(error);
  }
}

async function signOut() {
  await api("/api/auth/signout", { method: "POST" });
  window.location.reload();
}

function base() { return `/api/participants/${state.me.participant}`; }

function tradeQuery() {
  const params = new URLSearchParams();
  if ($("market").value) params.set("market", $("market").value);
  if ($("period").value) params.set("period", $("period").value);
  return params;
}

async function loadBill() {
  const bill = await api(`${base()}/bill`);
  fill("bill", [
    ["Energy sold", `${kwh(bill.energy_sold)} kWh`], ["Energy bought", `${kwh(bill.energy_bought)} kWh`],
    ["Receivable", `${cents(bill.money_receivable)} ct`], ["Payable", `${cents(bill.money_payable)} ct`],
    ["Balancing charges", `${cents(bill.balancing_charges)} ct`], ["Balancing credits", `${cents(bill.balancing_credits)} ct`],
    ["Net", `${cents(bill.net)} ct`]]);
  $("bill").dataset.raw = JSON.stringify(bill);
}

async function loadTrades() {
  const params = tradeQuery();
  params.set("page", state.page);
  params.set("per_page", state.perPage);
  const found = await api(`${base()}/trades?${params}`);
  const me = state.me.participant;
  fill("trades", found.trades.map((t) => {
    // A link only where an explorer is configured (EXPLORER_URL); the hash alone otherwise.
    const link = document.createElement(t.explorer_url ? "a" : "span");
    if (t.explorer_url) link.href = t.explorer_url;
    link.textContent = t.tx_hash.slice(0, 12) + "…";
    link.title = t.tx_hash;
    link.className = "tx-link";
    return [t.slot_time, t.market, t.seller === me ? "sold" : "bought", kwh(t.energy), cents(t.price), link];
  }));
  $("trades").dataset.ids = JSON.stringify(found.trades.map((t) => t.trade_id));
  const pages = Math.max(1, Math.ceil(found.total / found.per_page));
  $("page-info").textContent = `page ${found.page} of ${pages} (${found.total} trades)`;
  $("prev").disabled = found.page <= 1;
  $("next").disabled = found.page >= pages;
  if ($("market").options.length === 1) {
    for (const market of found.markets) $("market").add(new Option(market, market));
    for (const p of found.periods) $("period").add(new Option(`period ${p.period}`, String(p.period)));
  }
  $("csv-trades").href = `${base()}/trades.csv?${tradeQuery()}`;
}

async function loadSlots() {
  const { slots } = await api(`${base()}/slots`);
  fill("slots", slots.map((s) => [s.slot_time, s.status, kwh(s.bought), kwh(s.sold), kwh(s.import_energy),
    kwh(s.export_energy), cents(s.status === "balanced" ? String(BigInt(s.shortfall_charge) + BigInt(s.excess_charge)) : null),
    cents(s.surplus_credit)]));
  const metered = slots.filter((s) => s.status === "balanced");
  $("chart-empty").hidden = metered.length > 0;
  $("chart").replaceChildren();
  if (metered.length === 0 || !window.uPlot) return;
  const data = [
    metered.map((s) => s.slot),
    metered.map((s) => (Number(s.bought) - Number(s.sold)) / SCALE),
    metered.map((s) => (Number(s.import_energy) - Number(s.export_energy)) / SCALE),
    metered.map((s) => (Number(s.shortfall_charge) + Number(s.excess_charge) - Number(s.surplus_credit)) / SCALE),
  ];
  new window.uPlot({
    width: 980, height: 300,
    scales: { x: { time: true }, kwh: {}, ct: {} },
    axes: [{}, { scale: "kwh", label: "kWh" }, { scale: "ct", side: 1, label: "ct", grid: { show: false } }],
    series: [{}, { label: "traded kWh", scale: "kwh", stroke: "#1f77b4", width: 2 },
      { label: "measured kWh", scale: "kwh", stroke: "#2ca02c", width: 2 },
      { label: "balancing ct", scale: "ct", stroke: "#d62728", width: 1, dash: [4, 4] }],
  }, data, $("chart"));
}

async function loadStatements() {
  const { statements } = await api(`${base()}/statements`);
  fill("statements", statements.map((s) => [s.period, new Date(s.end_slot * 1000).toISOString().slice(0, 16) + "Z",
    kwh(s.energy_sold), kwh(s.energy_bought), cents(s.money_receivable), cents(s.money_payable),
    cents(s.balancing_charges), cents(s.balancing_credits), cents(s.net), s.paid ? "yes" : "no"]));
}

async function showParticipant() {
  $("participant").hidden = false;
  for (const kind of ["bill", "slots", "statements"]) $(`csv-${kind}`).href = `${base()}/${kind}.csv`;
  $("market").onchange = $("period").onchange = () => { state.page = 1; loadTrades(); };
  $("prev").onclick = () => { state.page -= 1; loadTrades(); };
  $("next").onclick = () => { state.page += 1; loadTrades(); };
  await Promise.all([loadBill(), loadTrades(), loadSlots(), loadStatements()]);
}

async function sendAsOperator(path, body) {
  $("op-error").textContent = "";
  $("op-result").textContent = "";
  delete $("op-result").dataset.hash;
  try {
    const tx = await api(path, { method: "POST", body });
    const hash = await window.ethereum.request({ method: "eth_sendTransaction",
      params: [{ from: state.me.wallet, to: tx.to, data: tx.data, chainId: tx.chainId }] });
    $("op-result").textContent = `Sent: ${hash}`;
    $("op-result").dataset.hash = hash;
  } catch (error) {
    $("op-error").textContent = error.message || String(error);
  }
}

function button(label, onclick) {
  const found = document.createElement("button");
  found.type = "button";
  found.textContent = label;
  found.onclick = onclick;
  return found;
}

function onSubmit(formId, path, body) {
  $(formId).onsubmit = (event) => {
    event.preventDefault();
    sendAsOperator(`/api/operator/transactions/${path}`, body());
  };
}

async function loadHealth() {
  const view = await api("/api/operator/health");
  const state = (s) => (s.up ? (s.status === "degraded" ? "degraded" : "up") : "down");
  fill("health", view.services.map((s) => [s.name, state(s), s.sentence]));
  $("health").dataset.raw = JSON.stringify(view.services);
  const dead = view.dead_letters;
  $("dead-error").textContent = dead.error || "";
  $("dead-letters").replaceChildren(...dead.streams.map((s) => {
    const part = document.createElement("div");
    part.className = "dead-stream";
    part.dataset.service = s.service;
    part.dataset.count = String(s.count);
    const title = document.createElement("p");
    title.textContent = `${s.service}: ${s.count} ${s.count === 1 ? "entry" : "entries"} in ${s.stream}` +
      (s.count > s.latest.length ? ` (the newest ${s.latest.length} shown)` : "");
    part.appendChild(title);
    if (s.latest.length) {
      const table = document.createElement("table");
      table.innerHTML = "<thead><tr><th>Refused at</th><th>Reason</th><th>Entry</th><th>Payload</th></tr></thead><tbody></tbody>";
      table.querySelector("tbody").replaceChildren(...s.latest.map((e) => row([e.rejected_at, e.reason, e.entry_id, e.payload])));
      part.appendChild(table);
    }
    return part;
  }));
  $("dead-letters").dataset.raw = JSON.stringify(dead);
}

async function showOperator() {
  $("operator").hidden = false;
  const [view] = await Promise.all([api("/api/operator/overview"), loadHealth()]);
  $("totals").textContent = `${view.totals.trades} trades, ${kwh(view.totals.energy)} kWh, ${cents(view.totals.price)} ct traded.`;
  fill("participants", view.participants.map((p) => [p.participant, p.wallet,
    button("Unregister", () => sendAsOperator("/api/operator/transactions/unregister", { participant: p.participant }))]));
  fill("meters", view.meters.map((m) => [m.meter, m.participant, m.signer,
    m.active_until === null ? "active" : new Date(m.active_until * 1000).toISOString(),
    m.active_until === null ? button("Deactivate", () => sendAsOperator("/api/operator/transactions/deactivate-meter", { meter: m.meter })) : ""]));
  fill("unmetered", view.unmetered.map((u) => [u.slot_time, u.participant, kwh(u.sold), kwh(u.bought)]));
  onSubmit("register-form", "register", () => ({ participant: $("reg-participant").value, wallet: $("reg-wallet").value }));
  onSubmit("meter-form", "register-meter", () => ({ meter: $("meter-id").value, signer: $("meter-signer").value,
    participant: $("meter-participant").value, home_area: $("meter-home").value }));
  onSubmit("deactivate-form", "deactivate-meter", () => ({ meter: $("deactivate-meter").value, at: $("deactivate-at").value }));
  onSubmit("close-form", "close-period", () => ({ end_slot: $("close-end").value }));
}

async function start() {
  const me = await api("/api/me");
  state.csrf = me.csrf_token;
  state.me = me.signed_in ? me : null;
  // Only now can a sign-in carry the CSRF token.
  $("sign-in").disabled = false;
  document.body.dataset.loaded = "true";
  $("signin").hidden = me.signed_in;
  $("who").hidden = !me.signed_in;
  if (!me.signed_in) return;
  $("who-text").textContent = me.role === "operator" ? `Grid operator (${me.wallet})` : `Participant ${me.participant} (${me.wallet})`;
  if (me.participant) await showParticipant();
  if (me.role === "operator") await showOperator();
  document.body.dataset.ready = "true";
}

$("sign-in").onclick = signIn;
$("sign-out").onclick = signOut;
start().catch((error) => { $("signin-error").textContent = error.message; });
