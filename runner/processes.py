"""Background processes the native runner starts and stops: spawn, find, terminate.

Processes outlive the command that started them (``./scripts/up`` returns), so they are
found again by pid and recognised by a marker in their command line, which guards against
a recycled pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    """True if ``pid`` is alive (not a zombie) and ``marker`` is in its command line,
    environment (a wrapper script that later execs keeps its environment, not its argv)
    or working directory (redis-server overwrites both argv and environment)."""
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        # Our own child: trust its exit status. Between fork and exec its command line and
        # environment are still ours, so the marker check would wrongly call it gone.
        return child.poll() is None
    try:
        proc = Path(f"/proc/{pid}")
        identity = b"\0".join([(proc / "cmdline").read_bytes(), (proc / "environ").read_bytes(),
                               os.readlink(proc / "cwd").encode()])
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


def log_tail(log_file: Path, lines: int = 20) -> str:
    """The last ``lines`` of a process's log, for an error message."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


class ManagedProcess:
    """One named background process whose pid survives in ``<state_dir>/<name>.pid.json``.

    The marker (a path unique to this process, e.g. its data directory) is stored with the
    pid and must appear in the process's command line or environment to count as running.
    """

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.pid_file = state_dir / f"{name}.pid.json"

    def _record(self) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads(self.pid_file.read_text())
            return record
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def pid(self) -> int | None:
        return self._record().get("pid")

    def is_running(self) -> bool:
        record = self._record()
        return is_running(record.get("pid"), record.get("marker", "\0"))

    def start(self, argv: Sequence[str], *, marker: str, log_file: Path,
              env: Mapping[str, str], cwd: Path | None = None) -> int:
        """Spawn unless already running, tagged with ``marker`` in its environment (some
        programs, redis-server among them, rewrite their command line)."""
        if self.is_running():
            return self.pid  # type: ignore[return-value]
        pid = spawn(argv, log_file=log_file, env={**env, "PILOTCHAIN_PROCESS": marker}, cwd=cwd)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({"pid": pid, "marker": marker}))
        return pid

    def stop(self, *, timeout: float = 90.0) -> bool:
        """SIGTERM and wait (SIGKILL after ``timeout``); True if it stopped cleanly."""
        record = self._record()
        if not record:
            return True
        clean = terminate(record["pid"], record["marker"], timeout=timeout)
        self.pid_file.unlink(missing_ok=True)
        return clean
