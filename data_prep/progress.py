"""A one-line progress report: files done, hours of EEG converted, windows and windows/s."""

from __future__ import annotations

import sys
import time


class Progress:
  """Prints ``files a/b (r rejected) | h hours EEG | w windows | x windows/s | ETA`` to stderr.

  Redraws at most every ``interval_s`` seconds (``\\r`` on a terminal, one line per update
  otherwise) and always once at ``close()``.
  """

  def __init__(self, total_files: int, skipped: int = 0, interval_s: float = 1.0, stream=None):
    self.total = total_files
    self.done = skipped
    self.skipped = skipped
    self.rejected = 0
    self.hours = 0.0
    self.windows = 0
    self.interval_s = interval_s
    self.stream = stream or sys.stderr
    self._start = time.monotonic()
    self._last = 0.0
    self._dirty = False

  def update(self, state: dict) -> None:
    """Account for one committed unit state (see ``data_prep.job.convert_task``)."""
    self.done += 1
    if state.get("status") == "converted":
      self.hours += state.get("duration_s", 0.0) / 3600.0
      self.windows += state.get("windows", 0)
    else:
      self.rejected += 1
    self._dirty = True
    now = time.monotonic()
    if now - self._last >= self.interval_s:
      self._last = now
      self._draw(final=False)

  def line(self) -> str:
    elapsed = max(time.monotonic() - self._start, 1e-9)
    rate = self.windows / elapsed
    new = self.done - self.skipped
    remaining = self.total - self.done
    eta = f"{remaining * elapsed / new:.0f} s" if new and remaining else "-"
    return (f"files {self.done}/{self.total} ({self.rejected} rejected, {self.skipped} already "
            f"done) | {self.hours:.2f} h EEG | {self.windows} windows | {rate:.1f} windows/s "
            f"| ETA {eta}")

  def _draw(self, final: bool) -> None:
    tty = getattr(self.stream, "isatty", lambda: False)()
    end = "\n" if (final or not tty) else ""
    prefix = "\r" if tty else ""
    self._dirty = False
    self.stream.write(prefix + self.line() + end)
    self.stream.flush()

  def close(self) -> None:
    """Draw the final line (unless the last update already showed it, off a terminal)."""
    tty = getattr(self.stream, "isatty", lambda: False)()
    if self._dirty or tty or self.done == self.skipped:
      self._draw(final=True)
