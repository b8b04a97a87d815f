// The portal page: sign-in with the wallet (EIP-4361 through window.ethereum, EIP-1193), then
// the participant's or the operator's view, filled from the portal's JSON API.
"use strict";

const state = { csrf: "", me: null, page: 1, perPage: 50, names: {} };
const $ = (id) => document.getElementById(id);
const SCALE = 1e18;

// The page's language (the server chose it: ?lang=, the switch's cookie, Accept-Language)
// and its translations of this script's English sentences, embedded as JSON in the page.
const LANG = document.documentElement.lang || "en";
const WORDS = JSON.parse(document.getElementById("i18n").textContent);
// Words this script translates from a variable, not a literal (the catalogue's test reads
// this list too).
const DYNAMIC = ["balanced", "unmetered", "up", "degraded", "down", "market", "participant", "Refused at", "Reason", "Entry", "Payload", "{service}: {count} entry in {stream}", "{service}: {count} entries in {stream}", "1 reading missing", "{count} readings missing"];
function t(text, params = {}) {
  return (WORDS[text] || text).replace(/\{(\w+)\}/g, (all, key) => (key in params ? String(params[key]) : all));
}

// Numbers and dates in the chosen locale: 1,234.567 / 1.234,567; ISO dates in English,
// 21.06.2026 in German; always UTC, as the chain counts.
const FORMATS = {};
function number(value, places) {
  if (!(places in FORMATS)) {
    FORMATS[places] = new Intl.NumberFormat(LANG, { minimumFractionDigits: places, maximumFractionDigits: places });
  }
  return FORMATS[places].format(value);
}
function kwh(raw) { return raw === null || raw === undefined ? "" : number(Number(raw) / SCALE, 3); }
function cents(raw) { return raw === null || raw === undefined ? "" : number(Number(raw) / SCALE, 2); }
// Money for people: euros from one euro on, cents below (a pilot's balancing is often cents).
function euros(raw) {
  const cts = Number(raw) / SCALE;
  return Math.abs(cts) >= 100 ? `${number(cts / 100, 2)} €` : `${number(cts, 2)} ct`;
}
function perKwh(money, energy) {
  return Number(energy) === 0 ? "–" : `${number(Number(money) / Number(energy), 2)} ct/kWh`;
}
function rate(raw) { return `${number(Number(raw) / SCALE, 2)} ct/kWh`; }
function day(seconds) {
  const date = new Date(seconds * 1000).toISOString().slice(0, 10);
  return LANG === "de" ? `${date.slice(8, 10)}.${date.slice(5, 7)}.${date.slice(0, 4)}` : date;
}
function when(seconds) {
  return `${day(seconds)} ${new Date(seconds * 1000).toISOString().slice(11, 16)} UTC`;
}

// A participant or market by name, its id beneath (shown on demand: "Show ids"). Without a
// name, the start of the id stands in.
function named(id, fallback) {
  const span = document.createElement("span");
  span.className = "named";
  span.dataset.id = id;
  const name = state.names[id];
  span.appendChild(document.createTextNode(name || `${t(fallback)} ${id.slice(0, 8)}…`));
  const full = document.createElement("span");
  full.className = "id";
  full.textContent = id;
  span.appendChild(full);
  return span;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { "Accept": "application/json" }, ...options };
  if (init.method === "POST") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRFToken"] = state.csrf;
    init.body = JSON.stringify(options.body || {});
  }
  const response = await fetch(path, init);
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: t("The portal sent no answer; try again.") }; }
  if (!response.ok) { throw new Error(body.error || t("The portal answered {status}.", { status: response.status })); }
  return body;
}

function sameHost(host) { return host.toLowerCase().replace(/:(80|443)$/, ""); }

function utf8Hex(text) {
  return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

function row(cells) {
  const tr = document.createElement("tr");
  if (cells.dataset) { Object.assign(tr.dataset, cells.dataset); }
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
    $("signin-error").textContent = t("No browser wallet was found; install MetaMask (or another wallet) and reload this page.");
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
      $("signin-error").textContent = t("This portal signs you in at {domain}; open {url} and sign in there.",
        { domain, url: `${window.location.protocol}//${domain}/` });
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

function fillKeyed(tableId, rows) {
  $(tableId).querySelector("tbody").replaceChildren(...rows.map(([key, value]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = key;
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(th, td);
    return tr;
  }));
}

async function loadBill() {
  const bill = await api(`${base()}/bill`);
  fillKeyed("bill", [
    [t("Energy sold"), `${kwh(bill.energy_sold)} kWh`], [t("Energy bought"), `${kwh(bill.energy_bought)} kWh`],
    [t("Receivable"), `${cents(bill.money_receivable)} ct`], [t("Payable"), `${cents(bill.money_payable)} ct`],
    [t("Balancing charges"), `${cents(bill.balancing_charges)} ct`], [t("Balancing credits"), `${cents(bill.balancing_credits)} ct`],
    [t("Net"), `${cents(bill.net)} ct`]]);
  $("bill").dataset.raw = JSON.stringify(bill);
}

// A row's transaction: a link only where an explorer is configured (EXPLORER_URL), the hash
// alone otherwise.
function txLink(row) {
  const link = document.createElement(row.explorer_url ? "a" : "span");
  if (row.explorer_url) link.href = row.explorer_url;
  link.textContent = row.tx_hash.slice(0, 12) + "…";
  link.title = row.tx_hash;
  link.className = "tx-link";
  return link;
}

async function loadTrades() {
  const params = tradeQuery();
  params.set("page", state.page);
  params.set("per_page", state.perPage);
  const found = await api(`${base()}/trades?${params}`);
  Object.assign(state.names, found.names);
  const me = state.me.participant;
  const t_ = t;
  fill("trades", found.trades.map((t) => {
    const link = txLink(t);
    const sold = t.seller === me;
    const other = sold ? t.buyer : t.seller;
    return [when(t.time_slot), named(t.market, "market"), sold ? t_("sold") : t_("bought"),
      other === me ? t_("yourself") : named(other, "participant"), kwh(t.energy), cents(t.price), link];
  }));
  $("trades").dataset.ids = JSON.stringify(found.trades.map((t) => t.trade_id));
  const pages = Math.max(1, Math.ceil(found.total / found.per_page));
  $("page-info").textContent = t("page {page} of {pages} ({total} trades)", { page: found.page, pages, total: found.total });
  $("prev").disabled = found.page <= 1;
  $("next").disabled = found.page >= pages;
  if ($("market").options.length === 1) {
    for (const market of found.markets) $("market").add(new Option(state.names[market] || `${t("market")} ${market.slice(0, 8)}…`, market));
    for (const p of found.periods) $("period").add(new Option(t("period {period}", { period: p.period }), String(p.period)));
  }
  $("csv-trades").href = `${base()}/trades.csv?${tradeQuery()}`;
}

async function loadSlots() {
  const { slots } = await api(`${base()}/slots`);
  fill("slots", slots.map((s) => [when(s.slot), t(s.status), kwh(s.bought), kwh(s.sold), kwh(s.import_energy),
    kwh(s.export_energy), cents(s.status === "balanced" ? String(BigInt(s.shortfall_charge) + BigInt(s.excess_charge)) : null),
    cents(s.surplus_credit)]));
  const metered = slots.filter((s) => s.status === "balanced");
  fillDays(metered);
  $("chart-empty").hidden = metered.length > 0;
  $("chart").replaceChildren();
  if (metered.length === 0 || !window.uPlot) return;
  const data = [
    metered.map((s) => s.slot),
    metered.map((s) => (Number(s.bought) - Number(s.sold)) / SCALE),
    metered.map((s) => (Number(s.import_energy) - Number(s.export_energy)) / SCALE),
    metered.map((s) => (Number(s.shortfall_charge) + Number(s.excess_charge) - Number(s.surplus_credit)) / SCALE),
  ];
  const width = Math.max(280, $("chart").clientWidth || 320);
  // uPlot zooms on a dragged selection; a double click zooms out again.
  new window.uPlot({
    width, height: width < 600 ? 240 : 300,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, kwh: {}, ct: {} },
    axes: [{}, { scale: "kwh", label: "kWh" }, { scale: "ct", side: 1, label: "ct", grid: { show: false } }],
    series: [{}, { label: t("traded kWh"), scale: "kwh", stroke: "#1f77b4", width: 2 },
      { label: t("measured kWh"), scale: "kwh", stroke: "#2ca02c", width: 2 },
      { label: t("balancing ct"), scale: "ct", stroke: "#d62728", width: 1, dash: [4, 4] }],
  }, data, $("chart"));
}

// Each UTC day's metered slots added up, exactly (BigInt), then shown like the slots.
function fillDays(metered) {
  const days = new Map();
  const keys = ["bought", "sold", "import_energy", "export_energy", "charge", "surplus_credit"];
  for (const s of metered) {
    const day = new Date(s.slot * 1000).toISOString().slice(0, 10);
    if (!days.has(day)) days.set(day, { slots: 0, start: s.slot, ...Object.fromEntries(keys.map((k) => [k, 0n])) });
    const sum = days.get(day);
    sum.slots += 1;
    for (const k of keys) {
      sum[k] += k === "charge" ? BigInt(s.shortfall_charge) + BigInt(s.excess_charge) : BigInt(s[k]);
    }
  }
  fill("days", [...days.values()].map((d) => [day(d.start), d.slots,
    kwh(String(d.bought)), kwh(String(d.sold)), kwh(String(d.import_energy)), kwh(String(d.export_energy)),
    cents(String(d.charge)), cents(String(d.surplus_credit))]));
  $("days").dataset.raw = JSON.stringify([...days.entries()].map(([day, d]) =>
    ({ day, slots: d.slots, ...Object.fromEntries(keys.map((k) => [k, String(d[k])])) })));
}

function pdfLink(period) {
  const link = document.createElement("a");
  link.href = `${base()}/statements/${period}.pdf?lang=${document.documentElement.lang}`;
  link.textContent = "PDF";
  link.className = "pdf-link";
  link.setAttribute("aria-label", t("Statement of period {period} as PDF", { period }));
  return link;
}

async function loadStatements() {
  const { statements } = await api(`${base()}/statements`);
  fill("statements", statements.map((s) => [s.period, when(s.end_slot),
    kwh(s.energy_sold), kwh(s.energy_bought), cents(s.money_receivable), cents(s.money_payable),
    cents(s.balancing_charges), cents(s.balancing_credits), cents(s.net), s.paid ? t("yes") : t("no"),
    pdfLink(s.period)]));
}

function figure(label, value, detail, cls) {
  const div = document.createElement("div");
  if (cls) div.className = cls;
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (detail) {
    const small = document.createElement("small");
    small.textContent = detail;
    dd.appendChild(small);
  }
  div.append(dt, dd);
  return div;
}

function signed(raw, positive, negative) {
  const value = Number(raw);
  return value >= 0 ? `${positive} ${euros(raw)}` : `${negative} ${euros(String(-BigInt(raw)))}`;
}

// Why a slot was charged or credited, in a sentence.
function reason(line) {
  const params = { at: when(line.slot), dev: kwh(line.deviation), measured: kwh(line.measured),
    traded: kwh(line.traded), rate: rate(line.rate) };
  if (line.kind === "shortfall") {
    return t("You exported {measured} kWh but sold {traded} kWh in the slot from {at}: {dev} kWh short, charged at {rate}.", params);
  }
  if (line.kind === "excess") {
    return t("You imported {measured} kWh but bought {traded} kWh in the slot from {at}: {dev} kWh came from the grid, charged at the grid-supply rate of {rate}.", params);
  }
  return t("You exported {measured} kWh but sold {traded} kWh in the slot from {at}: {dev} kWh went to the grid, credited at the feed-in rate of {rate}.", params);
}

async function loadMonth() {
  const period = $("month-period").value;
  const m = await api(`${base()}/summary?period=${encodeURIComponent(period)}`);
  $("month").dataset.raw = JSON.stringify(m);
  if (m.name) state.names[state.me.participant] = m.name;
  const figures = [
    figure(t("Bought from the community"), `${kwh(m.bought)} kWh`,
      t("{money}, on average {price}", { money: euros(m.paid), price: perKwh(m.paid, m.bought) }), "bought"),
    figure(t("From the grid"), `${kwh(m.from_grid)} kWh`,
      m.metered_slots ? t("measured beyond what you bought, in {count} metered slots", { count: m.metered_slots })
        : t("no metered slot closed in this period"), "from-grid"),
    figure(t("Self-sufficiency"), m.self_sufficiency === null ? "–" : `${number(m.self_sufficiency / 100, 0)} %`,
      m.self_sufficiency === null ? t("you drew no energy in this period")
        : t("of the energy you drew came from the community"), "self-sufficiency"),
    figure(t("Sold"), `${kwh(m.sold)} kWh`,
      t("{money}, on average {price}", { money: euros(m.received), price: perKwh(m.received, m.sold) }), "sold"),
    figure(t("Saved by buying in the community"), signed(m.savings, "", "-").trim(),
      t("against the grid-supply rate of {rate}", { rate: rate(m.grid_supply_rate) }), Number(m.savings) >= 0 ? "savings gain" : "savings loss"),
    figure(t("Earned beyond the feed-in rate"), signed(m.earned, "", "-").trim(),
      t("against the feed-in rate of {rate}", { rate: rate(m.feed_in_rate) }), Number(m.earned) >= 0 ? "earned gain" : "earned loss"),
    figure(t("Balancing"), t("{money} charged", { money: euros(m.balancing_charges) }),
      t("{money} credited", { money: euros(m.balancing_credits) }), "balancing"),
    figure(t("Net for the period"), signed(m.net, t("you receive"), t("you owe")),
      t("{count} trades", { count: m.trades }), "net"),
  ];
  $("month-figures").replaceChildren(...figures);
  $("balancing").replaceChildren(...m.balancing.map((line) => {
    const li = document.createElement("li");
    li.dataset.slot = String(line.slot);
    li.dataset.kind = line.kind;
    const amount = document.createElement("span");
    amount.className = "amount";
    amount.textContent = `${line.kind === "surplus" ? "+" : "-"}${euros(line.amount)} `;
    li.append(amount, document.createTextNode(reason(line)));
    return li;
  }));
  $("balancing-none").hidden = m.balancing.length > 0;
  const meterLines = m.meters.map((meter) => {
    const li = document.createElement("li");
    li.dataset.meter = meter.meter;
    const r = meter.last_reading;
    li.textContent = r ? t("Meter {meter}: last reading {at} (import {imported} Wh, export {exported} Wh).",
      { meter: `${meter.meter.slice(0, 10)}…`, at: when(r.time), imported: number(r.import_wh, 0), exported: number(r.export_wh, 0) })
      : t("Meter {meter}: no reading on chain yet.", { meter: `${meter.meter.slice(0, 10)}…` });
    return li;
  });
  if (m.meters.length === 0) meterLines.push(Object.assign(document.createElement("li"), { textContent: t("No meter is registered for you.") }));
  if (m.unmetered_slots) {
    meterLines.push(Object.assign(document.createElement("li"), { className: "unmetered",
      textContent: t("{count} slots closed unmetered in this period (nothing charged for them).", { count: m.unmetered_slots }) }));
  }
  $("meter-state").replaceChildren(...meterLines);
  if ($("month-period").options.length === 1) {
    for (const p of m.periods) {
      $("month-period").add(new Option(t("period {period} (to {end})", { period: p.period, end: when(p.end_slot) }), String(p.period)));
    }
  }
}

async function showParticipant() {
  $("participant").hidden = false;
  $("month-period").onchange = () => loadMonth();
  for (const kind of ["bill", "slots", "statements"]) $(`csv-${kind}`).href = `${base()}/${kind}.csv`;
  $("market").onchange = $("period").onchange = () => { state.page = 1; loadTrades(); };
  $("prev").onclick = () => { state.page -= 1; loadTrades(); };
  $("next").onclick = () => { state.page += 1; loadTrades(); };
  await loadMonth();
  // The running period is empty right after a period was closed: show the last closed one.
  const month = JSON.parse($("month").dataset.raw);
  if (month.trades === 0 && month.metered_slots === 0 && month.periods.length) {
    $("month-period").value = String(month.periods[month.periods.length - 1].period);
    await loadMonth();
  }
  await Promise.all([loadBill(), loadTrades(), loadSlots(), loadStatements()]);
  $("who-text").textContent = `${state.names[state.me.participant] || t("Participant {id}", { id: state.me.participant })} (${state.me.wallet})`;
}

async function sendAsOperator(path, body) {
  $("op-error").textContent = "";
  $("op-result").textContent = "";
  delete $("op-result").dataset.hash;
  try {
    const tx = await api(path, { method: "POST", body });
    const hash = await window.ethereum.request({ method: "eth_sendTransaction",
      params: [{ from: state.me.wallet, to: tx.to, data: tx.data, chainId: tx.chainId }] });
    $("op-result").textContent = t("Sent: {hash}", { hash });
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
  const state = (s) => t(s.up ? (s.status === "degraded" ? "degraded" : "up") : "down");
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
    title.textContent = t(s.count === 1 ? "{service}: {count} entry in {stream}" : "{service}: {count} entries in {stream}",
      { service: s.service, count: s.count, stream: s.stream }) +
      (s.count > s.latest.length ? t(" (the newest {shown} shown)", { shown: s.latest.length }) : "");
    part.appendChild(title);
    if (s.latest.length) {
      const table = document.createElement("table");
      table.className = "data";
      table.innerHTML = "<thead><tr><th></th><th></th><th></th><th></th></tr></thead><tbody></tbody>";
      table.querySelectorAll("th").forEach((th, i) => { th.textContent = t(["Refused at", "Reason", "Entry", "Payload"][i]); });
      table.querySelector("tbody").replaceChildren(...s.latest.map((e) => row([e.rejected_at, e.reason, e.entry_id, e.payload])));
      const scroll = document.createElement("div");
      scroll.className = "table-scroll";
      scroll.appendChild(table);
      part.appendChild(scroll);
    }
    return part;
  }));
  $("dead-letters").dataset.raw = JSON.stringify(dead);
}

// A meter's newest reading, flagged when slot boundaries passed without one.
function lastReading(m) {
  const cell = document.createElement("span");
  const r = m.last_reading;
  cell.textContent = r ? when(r.time) : t("none yet");
  if (m.missing) {
    const flag = document.createElement("strong");
    flag.className = "loss missing";
    flag.textContent = ` ${t(m.missing === 1 ? "1 reading missing" : "{count} readings missing", { count: m.missing })}`;
    cell.appendChild(flag);
  }
  return cell;
}

// The participants' table filtered as the operator types: by name, id or wallet (not by
// the figures or the buttons' words). All of them are in the page: 1,000 rows filter at
// once as the operator types.
function filterParticipants() {
  const wanted = $("participant-search").value.trim().toLowerCase();
  const rows = [...$("participants").querySelectorAll("tbody tr")];
  for (const tr of rows) {
    tr.hidden = wanted !== "" && !tr.dataset.search.includes(wanted);
  }
  $("participant-count").textContent = t("{shown} of {total} participants shown",
    { shown: rows.filter((tr) => !tr.hidden).length, total: rows.length });
}

// A participant's net of the open period in cents, coloured: owed to it, or owing.
function net(raw) {
  const cell = document.createElement("span");
  cell.textContent = cents(raw);
  if (Number(raw) !== 0) cell.className = Number(raw) > 0 ? "gain" : "loss";
  return cell;
}

async function showOperator() {
  $("operator").hidden = false;
  const [view] = await Promise.all([api("/api/operator/overview"), loadHealth()]);
  for (const [id, entry] of Object.entries(view.names)) state.names[id] = entry.name;
  $("totals").textContent = t("{trades} trades, {energy} kWh, {price} ct traded.",
    { trades: view.totals.trades, energy: kwh(view.totals.energy), price: cents(view.totals.price) });
  fill("participants", view.participants.map((p) => Object.assign([named(p.participant, "participant"), p.wallet,
    net(p.open_period.net),
    button(t("Unregister"), () => sendAsOperator("/api/operator/transactions/unregister", { participant: p.participant }))],
  { dataset: { participant: p.participant, net: p.open_period.net,
    search: [state.names[p.participant] || "", p.participant, p.wallet].join(" ").toLowerCase() } })));
  fill("meters", view.meters.map((m) => [m.meter, named(m.participant, "participant"), m.signer,
    m.active_until === null ? t("active") : when(m.active_until), lastReading(m),
    m.active_until === null ? button(t("Deactivate"), () => sendAsOperator("/api/operator/transactions/deactivate-meter", { meter: m.meter })) : ""]));
  $("participant-search").oninput = filterParticipants;
  filterParticipants();
  fill("unmetered", view.unmetered.map((u) => [when(u.slot), named(u.participant, "participant"), kwh(u.sold), kwh(u.bought), txLink(u)]));
  fill("community", view.community.map((c) => Object.assign([when(c.slot), String(c.participants), kwh(c.imported), kwh(c.exported),
    kwh(c.bought), kwh(c.from_grid), kwh(c.to_grid)], { dataset: { slot: String(c.slot) } })));
  $("community-none").hidden = view.community.length > 0;
  $("name-form").onsubmit = async (event) => {
    event.preventDefault();
    $("name-error").textContent = "";
    $("name-result").textContent = "";
    try {
      const saved = await api("/api/operator/names", { method: "POST", body: { id: $("name-id").value, name: $("name-text").value } });
      $("name-result").textContent = saved.name ? t("{id} is now shown as {name}.", { id: saved.id, name: saved.name })
        : t("{id} has no name now.", { id: saved.id });
      state.names[saved.id] = saved.name;
    } catch (error) {
      $("name-error").textContent = error.message || String(error);
    }
  };
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
  $("who-text").textContent = me.role === "operator" ? t("Grid operator ({wallet})", { wallet: me.wallet })
    : `${t("Participant {id}", { id: me.participant })} (${me.wallet})`;
  $("show-ids").onchange = () => document.body.classList.toggle("show-ids", $("show-ids").checked);
  if (me.participant) await showParticipant();
  if (me.role === "operator") await showOperator();
  document.body.dataset.ready = "true";
}

$("sign-in").onclick = signIn;
$("sign-out").onclick = signOut;
start().catch((error) => { $("signin-error").textContent = error.message; });
