"""Measurements in processes of their own, shared by the benchmark modes.

A measurement runs in a child process so that nothing another engine or a training step left
in the process (oneDNN state, thread pools, the allocator) changes its speed. The parent starts
the child with a JSON argument (:class:`TimedChild`); the child takes its reply channel
(:func:`reply_channel`), sets itself up, answers one first line, then times one run per line
it reads (:func:`serve`), or answers each request line (:func:`answer`, :meth:`TimedChild.ask`).

A child may also be a script run by its path with a PYTHONPATH of the caller's choosing
(``pythonpath``): the data benchmark runs one so that another checkout of passl_mixer, or
another Pillow, is the one measured (see ``data_child.py``).
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


def child_env(threads: Optional[int] = None, pythonpath: Optional[str] = None) -> Dict[str, str]:
    """The environment of a child: this checkout first on PYTHONPATH (or exactly
    ``pythonpath`` when given), and ``threads`` math threads when given."""
    if pythonpath is None:
        pythonpath = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class TimedChild:
    """``python -m module json(arg)`` as a child serving :func:`serve`: ``first`` is its first
    reply; :meth:`time_once` has it run once and returns the seconds it took. A ``module``
    ending in ``.py`` is a script run by its path; ``pythonpath``: see :func:`child_env`."""

    def __init__(self, name: str, module: str, arg: Any, threads: int,
                 log_dir: Optional[str] = None, pythonpath: Optional[str] = None):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+", dir=log_dir)  # stderr, read on failure
        run = [module] if module.endswith(".py") else ["-m", module]
        self.proc = subprocess.Popen(
            [sys.executable, *run, json.dumps(arg)], env=child_env(threads, pythonpath),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.first = self._reply()

    def _reply(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise RuntimeError(f"benchmark child '{self.name}' failed:\n{self.log.read()[-3000:]}")
        return line

    def ask(self, request: str) -> str:
        """Send one request line (to a child serving :func:`answer`); return its reply line."""
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def time_once(self) -> float:
        return float(self.ask("run"))

    def time_best(self, runs: int) -> float:
        """Have the child run ``runs`` times back to back; the best time."""
        return float(self.ask(f"run {runs}"))

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


def answer(replies, first_reply: str, handle: Callable[[str], str]) -> None:
    """The child's side: answer ``first_reply`` on ``replies`` (:func:`reply_channel`), then
    ``handle(line)`` (one line, no newline) to each line read."""
    replies.write(first_reply + "\n")
    for line in sys.stdin:
        replies.write(handle(line.rstrip("\n")) + "\n")


def serve(replies, first_reply: str, once: Callable[[], Any]) -> None:
    """The child's side: answer ``first_reply`` on ``replies`` (:func:`reply_channel`), then
    per line read ('run' or 'run N') time ``once()`` N times (default 1) and reply the best."""
    def timed(line: str) -> str:
        words = line.split()
        best = float("inf")
        for _ in range(int(words[1]) if len(words) > 1 else 1):
            start = time.perf_counter()
            once()
            best = min(best, time.perf_counter() - start)
        return str(best)

    answer(replies, first_reply, timed)
