"""Measurements in processes of their own, shared by the benchmark modes.

A measurement runs in a child process so that nothing another engine or a training step left
in the process (oneDNN state, thread pools, the allocator) changes its speed. The parent starts
the child with a JSON argument (:class:`TimedChild`); the child takes its reply channel
(:func:`reply_channel`), sets itself up, answers one first line, then times one run per line
it reads (:func:`serve`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(threads: Optional[int] = None) -> Dict[str, str]:
    """The environment of a child: this checkout first on PYTHONPATH, and ``threads`` math
    threads when given."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class TimedChild:
    """``python -m module json(arg)`` as a child serving :func:`serve`: ``first`` is its first
    reply; :meth:`time_once` has it run once and returns the seconds it took."""

    def __init__(self, name: str, module: str, arg: Any, threads: int,
                 log_dir: Optional[str] = None):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+", dir=log_dir)  # stderr, read on failure
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(arg)], env=child_env(threads),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.first = self._reply()

    def _reply(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise RuntimeError(f"benchmark child '{self.name}' failed:\n{self.log.read()[-3000:]}")
        return line

    def time_once(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._reply())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def reply_channel():
    """Called first in the child: a private copy of stdout for the replies, while file
    descriptor 1 itself goes to stderr, so that what setting up prints (Paddle's C++ debug
    lines, NNCF's progress bars) cannot mix into the replies."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return replies


def serve(replies, first_reply: str, once: Callable[[], Any]) -> None:
    """The child's side: answer ``first_reply`` on ``replies`` (:func:`reply_channel`), then
    time one ``once()`` per line read."""
    replies.write(first_reply + "\n")
    for _ in sys.stdin:
        start = time.perf_counter()
        once()
        replies.write(f"{time.perf_counter() - start}\n")
