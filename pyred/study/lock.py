"""One run at a time per study folder: an exclusive lock on DIR/.pyred.lock (flock).

A second ``pyred run`` on the same folder waits, saying who holds it, or with
``wait=False`` refuses at once. The operating system drops the lock when its
holder exits, however it exits (SIGKILL included), so a stale lock cannot block.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable

from .errors import StudyError


class RunLock:
    def __init__(self, folder: str, wait: bool = True, poll: float = 0.5,
                 say: Callable[[str], object] | None = None) -> None:
        self.path = os.path.join(folder, ".pyred.lock")
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        said = False
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder()
                if not wait:
                    os.close(self._fd)
                    raise StudyError(f"another pyred run ({holder}) is using {folder}; wait for it to finish, or "
                                     "drop --no-wait to wait for it") from None
                if not said:
                    (say or _stderr)(f"pyred: another run ({holder}) is using {folder}; waiting for it to finish "
                                     "(--no-wait refuses instead)")
                    said = True
                time.sleep(poll)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        os.fsync(self._fd)

    def _holder(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip() or "pid unknown"
        except OSError:
            return "pid unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
