"""A server process a test starts and stops (PowerDNS, Pebble): the stopping, the log and the
`with` block they share. A subclass starts the process in `start()`, keeping it in `process`
and its output file in `_log_file`."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import IO, Self


class Daemon:
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None
    # The signal that asks the process to stop at once.
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (`stop_signal`, then SIGKILL); its ports stop answering at once."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
