"""The portal database's schema: plain SQL for SQLite and PostgreSQL, versioned.

One dialect switch only: ``{amount}``, the type of unsigned integers of up to 256 bits.
PostgreSQL keeps them exactly as ``NUMERIC(78, 0)`` (sums stay exact); SQLite's integers are
64-bit and its NUMERIC falls back to floating point, so there they are decimal TEXT and the
database layer converts. Every event row carries where it happened (block number, log index,
transaction hash), which is also how a reorganisation's rows are found and removed.

``MIGRATIONS[n]`` takes a database from version n to n + 1; :func:`portal.db.Database.migrate`
applies the missing ones in one transaction at start and records the version.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

AMOUNT_TYPES: dict[Dialect, str] = {"sqlite": "TEXT", "postgresql": "NUMERIC(78, 0)"}

_WHERE = """
    block_number BIGINT NOT NULL,
    log_index INTEGER NOT NULL,
    tx_hash TEXT NOT NULL"""
_EVENT_KEY = "PRIMARY KEY (block_number, log_index)"

_VERSION_1 = (
    # The one cursor row: the last indexed block (number and hash), moved in the transaction
    # that writes that block's rows. contract and chain_id guard against a database made for
    # another deployment.
    """CREATE TABLE cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_id BIGINT NOT NULL,
    contract TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash TEXT NOT NULL
)""",
    # Hashes of the newest indexed blocks (PORTAL_MAX_REORG_DEPTH of them): where a
    # reorganisation's common ancestor is looked for.
    """CREATE TABLE blocks (
    number BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    parent_hash TEXT NOT NULL
)""",
    f"""CREATE TABLE trades (
    trade_id TEXT PRIMARY KEY,
    market TEXT NOT NULL,
    time_slot BIGINT NOT NULL,
    seller TEXT NOT NULL,
    buyer TEXT NOT NULL,
    seller_origin TEXT NOT NULL,
    buyer_origin TEXT NOT NULL,
    energy {{amount}} NOT NULL,
    price {{amount}} NOT NULL,
    fee {{amount}} NOT NULL,{_WHERE},
    UNIQUE (block_number, log_index)
)""",
    "CREATE INDEX trades_seller ON trades (seller, time_slot)",
    "CREATE INDEX trades_buyer ON trades (buyer, time_slot)",
    "CREATE INDEX trades_block ON trades (block_number)",
    f"""CREATE TABLE wallet_events (
    participant TEXT NOT NULL,
    wallet TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('registered', 'unregistered')),{_WHERE},
    {_EVENT_KEY}
)""",
    "CREATE INDEX wallet_events_wallet ON wallet_events (wallet)",
    f"""CREATE TABLE meters_registered (
    meter TEXT NOT NULL,
    participant TEXT NOT NULL,
    signer TEXT NOT NULL,
    home_area TEXT NOT NULL,
    active_from BIGINT NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    f"""CREATE TABLE meters_deactivated (
    meter TEXT NOT NULL,
    participant TEXT NOT NULL,
    active_until BIGINT NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    f"""CREATE TABLE readings (
    meter TEXT NOT NULL,
    time BIGINT NOT NULL,
    import_wh {{amount}} NOT NULL,
    export_wh {{amount}} NOT NULL,
    minutes_anchor TEXT NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    "CREATE INDEX readings_meter ON readings (meter, time)",
    f"""CREATE TABLE slots_balanced (
    participant TEXT NOT NULL,
    slot BIGINT NOT NULL,
    meter TEXT NOT NULL,
    import_energy {{amount}} NOT NULL,
    export_energy {{amount}} NOT NULL,
    sold {{amount}} NOT NULL,
    bought {{amount}} NOT NULL,
    shortfall_charge {{amount}} NOT NULL,
    excess_charge {{amount}} NOT NULL,
    surplus_credit {{amount}} NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    "CREATE INDEX slots_balanced_participant ON slots_balanced (participant, slot)",
    f"""CREATE TABLE slots_unmetered (
    participant TEXT NOT NULL,
    slot BIGINT NOT NULL,
    sold {{amount}} NOT NULL,
    bought {{amount}} NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    f"""CREATE TABLE rates (
    from_slot BIGINT NOT NULL,
    shortfall_rate {{amount}} NOT NULL,
    grid_supply_rate {{amount}} NOT NULL,
    feed_in_rate {{amount}} NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    f"""CREATE TABLE periods (
    period BIGINT NOT NULL,
    end_slot BIGINT NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
    f"""CREATE TABLE statements_paid (
    period BIGINT NOT NULL,
    participant TEXT NOT NULL,{_WHERE},
    {_EVENT_KEY}
)""",
)

# The web portal's sign-in state, kept here so every gunicorn worker sees it: single-use
# sign-in nonces (each bound to the wallet it was issued to) and the sessions they opened.
# Times are Unix seconds; rows past their expiry are swept by the portal.
_VERSION_2 = (
    """CREATE TABLE web_nonces (
    nonce TEXT PRIMARY KEY,
    wallet TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)""",
    """CREATE TABLE web_sessions (
    id TEXT PRIMARY KEY,
    wallet TEXT NOT NULL,
    participant TEXT,
    role TEXT NOT NULL CHECK (role IN ('participant', 'operator')),
    expires_at BIGINT NOT NULL
)""",
)

# The operator's totals without reading every trade: per block, how many trades it recorded
# and their energy and money, written with the block's trades and deleted with them when a
# reorganisation takes the block away. A database made before this table is filled from its
# trades when migrated (portal.db).
_VERSION_3 = (
    """CREATE TABLE trade_sums (
    block_number BIGINT PRIMARY KEY,
    trades INTEGER NOT NULL,
    energy {amount} NOT NULL,
    price {amount} NOT NULL
)""",
)
TRADE_SUMS_VERSION = 3

# A participant's trades as two ranges of indexes that hold every column, in recording order:
# their pages and CSV are read without touching the table (10,000 trades of 200,000 in
# ~40 ms instead of ~170 ms of scattered row reads and a sort, on SQLite). Costs about as
# much disk again as the table, per index.
_TRADE_INDEX_COLUMNS = ("block_number, log_index, market, time_slot, trade_id, tx_hash, "
                        "seller_origin, buyer_origin, energy, price, fee")
_VERSION_4 = (
    "DROP INDEX IF EXISTS trades_seller",
    "DROP INDEX IF EXISTS trades_buyer",
    "CREATE INDEX IF NOT EXISTS trades_of_seller "
    f"ON trades (seller, {_TRADE_INDEX_COLUMNS}, buyer)",
    "CREATE INDEX IF NOT EXISTS trades_of_buyer "
    f"ON trades (buyer, {_TRADE_INDEX_COLUMNS}, seller)",
)

# Sign-in nonces bound to the exact message issued (its SHA-256: a signed message that differs
# from it in any character is refused) and to the client that asked (how many messages one
# client may have waiting is limited). Nonces live minutes, so the table is made anew: a
# sign-in under way while the portal is upgraded is asked to start again.
_VERSION_5 = (
    "DROP TABLE web_nonces",
    """CREATE TABLE web_nonces (
    nonce TEXT PRIMARY KEY,
    wallet TEXT NOT NULL,
    client TEXT NOT NULL,
    message_sha256 TEXT NOT NULL,
    issued_ns BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
)""",
    "CREATE INDEX web_nonces_wallet ON web_nonces (wallet, issued_ns)",
    "CREATE INDEX web_nonces_client ON web_nonces (client, expires_at)",
)

# Names for the uuids (portal.names): gsy-e's, read from the bridge's trade stream (the chain
# holds none), and the operator's own, which wins; and where in that stream the portal last
# read. Nothing on chain to fill them from, so an upgraded index starts them empty and the
# next read of the stream fills them.
_VERSION_6 = (
    """CREATE TABLE IF NOT EXISTS names (
    id TEXT PRIMARY KEY,
    gsy_name TEXT,
    display_name TEXT
)""",
    """CREATE TABLE IF NOT EXISTS name_cursor (
    stream TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL
)""",
)

# Each participant's bill per billing period without reading its trades: the sums of its
# period's trades (energy and money, sold and bought) and balancing (charges and credits), as
# the contract's bill words count them. A trade's period is the contract's: the number of
# periods closed when it was recorded, plus one.
# - participant_sums: one row per block that changed them, holding the sums as they stand
#   after that block. A reorganisation deletes its blocks' rows (as every event row) and the
#   newest row left is the sum again. Rows no reorganisation can reach any more are pruned
#   to the newest of each participant and period (portal.db).
# - participant_bills: the newest of them, one row a participant and period, kept with them
#   (and put back from them by a reorganisation): what the operator's overview reads.
# An upgraded index fills both from its trades, balanced slots and closed periods.
_PARTICIPANT_SUM_COLUMNS = """
    energy_sold {amount} NOT NULL,
    energy_bought {amount} NOT NULL,
    money_receivable {amount} NOT NULL,
    money_payable {amount} NOT NULL,
    balancing_charges {amount} NOT NULL,
    balancing_credits {amount} NOT NULL,"""
_VERSION_7 = (
    f"""CREATE TABLE IF NOT EXISTS participant_sums (
    period BIGINT NOT NULL,
    participant TEXT NOT NULL,
    block_number BIGINT NOT NULL,{_PARTICIPANT_SUM_COLUMNS}
    PRIMARY KEY (period, participant, block_number)
)""",
    "CREATE INDEX IF NOT EXISTS participant_sums_block ON participant_sums (block_number)",
    f"""CREATE TABLE IF NOT EXISTS participant_bills (
    period BIGINT NOT NULL,
    participant TEXT NOT NULL,{_PARTICIPANT_SUM_COLUMNS}
    PRIMARY KEY (period, participant)
)""",
)
PARTICIPANT_SUMS_VERSION = 7
PARTICIPANT_SUMS = ("energy_sold", "energy_bought", "money_receivable", "money_payable",
                    "balancing_charges", "balancing_credits")

MIGRATIONS: tuple[tuple[str, ...], ...] = (_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4,
                                           _VERSION_5, _VERSION_6, _VERSION_7)
VERSION = len(MIGRATIONS)


def statements(dialect: Dialect, from_version: int) -> list[str]:
    """The DDL that takes a database at ``from_version`` to :data:`VERSION`."""
    amount = AMOUNT_TYPES[dialect]
    return [sql.replace("{amount}", amount) for step in MIGRATIONS[from_version:] for sql in step]
