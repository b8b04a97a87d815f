"""One sender at a time across every gunicorn worker and thread: a lock file that also
holds the faucet account's next nonce.

Each worker has its own :class:`~pilotchain.chain.Sender`, whose thread lock queues the
worker's threads; this file lock (``flock``) makes the workers take turns, and the nonce
kept in it lets each send start where the previous one, from whichever worker, left off.
A waiting worker sleeps in the kernel and wakes the moment the lock is free, a worker that
dies releases it, and the nonce is read and written without a network round trip, so the
lock is held only to sign and submit. The file must be on a disk every worker sees: run
one faucet (with any number of workers) per faucet key.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

from faucet.errors import FaucetUnavailable

log = logging.getLogger(__name__)


class SendLock:
    """A reusable, cross-process context manager and the NonceStore it protects.

    ``load`` and ``save`` must be called while the lock is held (Sender does). The file
    names the account its nonce belongs to, so a file shared by mistake between faucets
    of different keys costs them some waiting, never a wrong nonce.
    """

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account.lower()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        """This process's own descriptor: flock locks belong to an open file, so a
        descriptor inherited across fork (gunicorn --preload) must not be shared."""
        if self._fd is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as error:
                log.error("Cannot open the send lock %s: %s", self.path, error)
                raise FaucetUnavailable(
                    "The faucet cannot open its send lock file, so nothing was sent; please "
                    "tell the pilot's operators (see FAUCET_LOCK_FILE)."
                ) from None
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> SendLock:
        # Blocks (without the GIL) until the holder is done; a holder is bounded by its
        # RPC timeout, and the kernel frees the lock of a worker that dies.
        fcntl.flock(self._file(), fcntl.LOCK_EX)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        fcntl.flock(self._file(), fcntl.LOCK_UN)

    def load(self) -> int | None:
        """The next nonce, or None if unknown (then the Sender asks the node)."""
        owner, _, nonce = os.pread(self._file(), 128, 0).decode(errors="replace").partition(" ")
        if owner != self.account or not nonce.strip().isdigit():
            return None
        return int(nonce)

    def save(self, nonce: int | None) -> None:
        data = b"" if nonce is None else f"{self.account} {nonce}\n".encode()
        fd = self._file()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def forget(self) -> None:
        """Drop the saved nonce (at start-up: the chain may have been reset meanwhile)."""
        with self:
            self.save(None)
