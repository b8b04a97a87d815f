"""The gsy-e container's start path (docker/gsy-e/start.sh), run for real.

Compose runs gsy-e through ``start.sh`` as root, which reads the Redis password and then drops
to the image's ``gsy`` user. ``setpriv`` keeps the environment, so gsy-e used to run with
``HOME=/root`` (mode 0700): it could not write its default export under ``Path.home()`` and
stopped at the end of its first slot with an uncaught PermissionError. Here the real script
starts a real gsy-e (``GSY_E_PYTHON``'s environment; skipped where there is none) as root with
``HOME=/root``, dropping to an unprivileged user, for four slots with ``--enable-bc`` and
PilotChain's plug-in from this checkout: it must finish, write its export where it was told
(owned by that user), and every trade of the export must be in the stream, once.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.events import EVENT_FIELD
from pilotchain.gsy_export import read_export
from pilotchain.reconcile import reconcile
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import parse_event

START = PROJECT_ROOT / "docker" / "gsy-e" / "start.sh"
STREAM = "test:gsy-e-start"
USER = "nobody"  # an unprivileged user every Debian has; its own home does not exist


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pilotchain-gsy-e-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_gsy_e_runs_its_slots_as_its_own_user_and_every_trade_reaches_the_stream(
        gsy_e_python: str, redis_url: str, scratch: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("start.sh drops from root to gsy-e's user; run as root (as CI does)")
    user = pwd.getpwnam(USER)
    bin_dir = Path(gsy_e_python).parent
    reachable = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                                "--clear-groups", str(bin_dir / "python"), "-c", "import gsy_e"],
                               capture_output=True, timeout=120, check=False)
    if reachable.returncode != 0:
        pytest.skip(f"the gsy-e environment of {gsy_e_python} is not usable by an unprivileged "
                    "user (is it under /root?); install gsy-e where others can read it")
    home = scratch / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    exports = scratch / "exports"
    overflow = scratch / "overflow" / "unpublished.jsonl"
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "HOME": "/root",  # what setpriv hands on, as in the container
           "PYTHONPATH": str(PROJECT_ROOT / "plugin"),  # the plug-in of this checkout
           "GSY_USER": USER, "GSY_HOME": str(home), "GSY_E_EXPORT_DIR": str(exports),
           "BRIDGE_PLUGIN_OVERFLOW_FILE": str(overflow), "REDIS_URL": redis_url,
           "BRIDGE_STREAM": STREAM}
    result = subprocess.run(["sh", str(START), "run", "--setup", "default_2a", "-m", "2", "-s",
                             "15m", "-t", "15s", "-d", "1h", "--start-date", "2026-06-21",
                             "--enable-bc"], env=env, cwd=scratch, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert exports.stat().st_uid == user.pw_uid and overflow.parent.stat().st_uid == user.pw_uid
    assert not overflow.exists()

    client = redis.Redis.from_url(redis_url)
    try:
        events = [json.loads(fields[EVENT_FIELD.encode()]) for _, fields in client.xrange(STREAM)]
    finally:
        client.close()
    export = read_export(exports)
    slots = {trade.time_slot for trade in export.trades}
    assert len(slots) >= 3, f"trades in {len(slots)} slots; gsy-e stopped early"
    result_books = reconcile(export, [parse_event(event) for event in events])
    assert result_books.ok, result_books.differences[:5]
    assert result_books.total("matched") == len(events) == len(export.trades)
