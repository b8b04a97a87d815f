"""The settings every stream-to-chain service declares alike, and checks they share.

Each service declares its own rows (``BRIDGE_...``, ``INGEST_...``) in its own config module;
the rows that mean the same in each are made here, so their wording and bounds cannot drift.
"""

from __future__ import annotations

from typing import Any

from pilotchain.errors import PilotChainError
from pilotchain.settings import Setting


def loop_rows(prefix: str, defaults: Any) -> dict[str, Setting]:
    """The rows every writing service declares alike (those of the stream-to-chain loop and
    its writer that mean the same in each), named ``<prefix>_...``, by field."""
    d = defaults
    rows = (
        Setting(f"{prefix}_GROUP", "group", "str", d.group, "consumer group"),
        Setting(f"{prefix}_MAX_IN_FLIGHT", "max_in_flight", "int", d.max_in_flight,
                "transactions sent but not final", minimum=1),
        Setting(f"{prefix}_CONFIRMATIONS", "confirmations", "int", d.confirmations,
                "blocks on top of a receipt before its entries are acknowledged", minimum=0),
        Setting(f"{prefix}_PRIORITY_FEE_GWEI", "priority_fee_gwei", "float",
                d.priority_fee_gwei, "tip; geth's miners take nothing below 1 gwei",
                minimum=0.0),
        Setting(f"{prefix}_RECOVERY_TIMEOUT", "recovery_timeout", "float", d.recovery_timeout,
                "seconds to wait at start for the previous run's transactions", minimum=0.0),
        Setting(f"{prefix}_METRICS_HOST", "metrics_host", "str", d.metrics_host,
                "metrics endpoint address (`0.0.0.0` in a container)"),
        Setting(f"{prefix}_METRICS_PORT", "metrics_port", "int", d.metrics_port,
                "metrics endpoint port (`/metrics`, `/health`)", minimum=0),
        Setting(f"{prefix}_LOG_INTERVAL", "log_interval", "float", d.log_interval,
                "seconds between progress lines in the log", minimum=0.1),
        Setting(f"{prefix}_BACKOFF_MAX", "backoff_max", "float", d.backoff_max,
                "ceiling of the retry delay, in seconds, when Redis or the RPC node is away",
                minimum=0.1),
        Setting(f"{prefix}_DEAD_LETTER_MAXLEN", "dead_letter_maxlen", "int",
                d.dead_letter_maxlen,
                "dead letters kept; beyond, the oldest are dropped (each is final, and a flood "
                "of bad entries must not fill Redis)", minimum=1),
        Setting(f"{prefix}_HEALTH_MAX_AGE", "health_max_age", "float", d.health_max_age,
                "`/health` says `degraded` while the oldest unsettled entry of the stream is "
                "older than this many seconds", minimum=1.0),
        Setting(f"{prefix}_HEALTH_MAX_BACKLOG", "health_max_backlog", "int",
                d.health_max_backlog,
                "`/health` says `degraded` while the stream holds more unsettled entries than "
                "this", minimum=1),
    )
    return {row.field: row for row in rows}


def check_writer_settings(prefix: str, gas_budget: float, max_batch: int, most: int,
                          error: type[PilotChainError]) -> None:
    """Refuse a gas budget or batch size the writer cannot work with."""
    if not 0 < gas_budget <= 2:
        raise error(
            f"{prefix}_GAS_BUDGET must be above 0 and at most 2 (a fraction of the block "
            f"gas target), not {gas_budget}."
        )
    if not 1 <= max_batch <= most:
        raise error(
            f"{prefix}_MAX_BATCH must be between 1 and {most} (geth refuses "
            f"transactions over 128 KiB), not {max_batch}."
        )
