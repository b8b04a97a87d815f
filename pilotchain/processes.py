"""Background processes the native runner starts and stops: spawn, find, terminate.

Processes outlive the command that started them (``./scripts/up`` returns), so they are
found again by pid and recognised by a marker in their command line, which guards against
a recycled pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Children started by this process, kept so they are reaped by their Popen rather than
# garbage-collected while still running.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], *, log_file: Path, env: Mapping[str, str],
          cwd: Path | None = None) -> int:
    """Start ``argv`` in its own session, output appended to ``log_file``; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env), cwd=cwd, start_new_session=True,
        )
    _children[process.pid] = process
    return process.pid


def is_running(pid: int | None, marker: str) -> bool:
    """True if ``pid`` is alive (not a zombie) and ``marker`` is in its command line or
    environment (a wrapper script that later execs keeps its environment, not its argv)."""
    if not pid:
        return False
    try:
        proc = Path(f"/proc/{pid}")
        identity = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False
    return state != "Z" and marker.encode() in identity


def terminate(pid: int, marker: str, *, timeout: float = 90.0, sig: int = signal.SIGTERM) -> bool:
    """Signal ``pid`` and wait for it to exit; SIGKILL after ``timeout``.

    Returns True for a clean stop. geth needs its SIGTERM and time to flush its state:
    killing it outright makes it rewind on the next start.
    """
    if not is_running(pid, marker):
        return True
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_running(pid, marker):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while is_running(pid, marker):
        _reap(pid)
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
