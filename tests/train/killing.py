"""Kill a training process in the middle of an epoch, as a machine reset or an OOM kill would."""
from __future__ import annotations

import re
import signal
import subprocess
import threading


def kill_mid_epoch(proc: subprocess.Popen, epoch: int, epochs: int, steps: int, timeout: float,
                   sig: int = signal.SIGKILL) -> str | None:
    """Send ``sig`` (SIGKILL: no clean-up at all) to ``proc`` once its progress bar (read from its unbuffered text stderr) shows
    ``epoch`` in progress, at a step from 1 to ``steps - 1``; waits at most ``timeout`` seconds.

    Returns:
        The progress line that triggered the kill, or None if that point never came.
    """
    pattern = re.compile(rf"epoch {epoch}/{epochs}:.*\|\s*([1-9]\d*)/{steps}")
    seen: list[str] = []

    def watch():
        buf = ""
        while ch := proc.stderr.read(1):
            buf += ch
            if ch in "\r\n":
                m = pattern.search(buf)
                if m and int(m.group(1)) < steps:
                    seen.append(buf)
                    proc.send_signal(sig)
                    return
                buf = ""

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t.join(timeout=timeout)
    return seen[0] if seen else None
