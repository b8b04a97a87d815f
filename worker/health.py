"""What a service's ``/health`` says: up or not, and degraded with a sentence while it
works but lags (the endpoint serving it: worker/endpoint.py)."""

from __future__ import annotations

from typing import Any

# What /health shows of the snapshot besides the verdict, where the service measures it: its
# links (Redis, the chain), the head it has seen and its stream's backlog.
SHOWN = ("redis", "chain", "last_block", "backlog", "oldest_unsettled_s")


def health_answer(snapshot: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``/health``: 503 while the service cannot work (Redis, the chain or its broker away,
    still starting), with its state and the problem; 200 while it works, its status ``ok``,
    or ``degraded`` with a sentence while it lags behind or recently lost its session: it
    needs a look, not a restart (Compose and ``./scripts/up`` judge liveness by the code)."""
    running = snapshot["state"] == "running"
    warning = snapshot.get("warning")
    if not running:
        status, problem = str(snapshot["state"]), snapshot["problem"]
    elif warning:
        status, problem = "degraded", warning
    else:
        status, problem = "ok", None
    body = {"status": status, "problem": problem,
            **{key: snapshot[key] for key in SHOWN if key in snapshot}}
    return (200 if running else 503), body


def backlog_problem(length: int, age: float | None, max_backlog: int, max_age: float,
                    prefix: str) -> str | None:
    """The sentence for a stream's backlog past a health threshold, None within them."""
    if length > max_backlog:
        return (f"{length} entries wait to be settled, more than {max_backlog} "
                f"({prefix}_HEALTH_MAX_BACKLOG).")
    if age is not None and age > max_age:
        return (f"The oldest unsettled entry has waited {age:.0f} s, longer than {max_age:g} s "
                f"({prefix}_HEALTH_MAX_AGE).")
    return None
