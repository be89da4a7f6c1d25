"""The largest batch whose compiled step fits a memory capacity, in few compiles.

`largest_fitting_batch(peak_of, capacity)` searches integer batches b >= 1 for the largest with
peak_of(b) <= capacity, assuming peak_of increases with b (per-device memory = resident
parameters and optimizer state + activations that grow about linearly with the batch). Until
a batch that does not fit is seen, the next candidate is the least-squares linear prediction
from every batch evaluated so far; then the secant through the bracket's ends (largest
fitting, smallest not fitting), kept a quarter of the bracket inside it. A linear peak_of is
solved in 3-4 evaluations, a curved one in about log(bracket) more.
Evaluations are cached in `evaluated` (shared between capacities).
"""

from __future__ import annotations

import math
from typing import Callable


def _linear_prediction(evaluated: dict, capacity: float) -> int | None:
  pts = sorted(evaluated.items())
  if len(pts) < 2:
    return None
  n = len(pts)
  mb = sum(b for b, _ in pts) / n
  mp = sum(p for _, p in pts) / n
  var = sum((b - mb) ** 2 for b, _ in pts)
  slope = sum((b - mb) * (p - mp) for b, p in pts) / var
  if slope <= 0:
    return None
  return math.floor(mb + (capacity - mp) / slope)


def largest_fitting_batch(peak_of: Callable[[int], float], capacity: float,
                          evaluated: dict | None = None, max_evals: int = 6,
                          first: tuple[int, ...] = (1, 2)) -> dict:
  """-> {"batch": largest fitting b seen (0: even b=1 does not fit), "exact": whether b+1
  was seen not to fit, "predicted": the linear fit's largest batch (None with < 2 points),
  "evaluations": new peak_of calls}. `evaluated` {b: peak} is read and extended; at most
  `max_evals` new calls (the `first` batches included)."""
  evaluated = {} if evaluated is None else evaluated
  calls = 0

  def peak(b):
    nonlocal calls
    if b not in evaluated:
      evaluated[b] = float(peak_of(b))
      calls += 1
    return evaluated[b]

  for b in first:
    if calls >= max_evals or peak(b) > capacity:
      break
  while True:
    fits = [b for b, p in evaluated.items() if p <= capacity]
    over = [b for b, p in evaluated.items() if p > capacity]
    lo = max(fits) if fits else 0
    hi = min(over) if over else None
    if hi == lo + 1 or (hi is not None and hi <= 1) or calls >= max_evals:
      return {"batch": lo, "exact": hi == lo + 1,
              "predicted": _linear_prediction(evaluated, capacity), "evaluations": calls}
    if hi is None:
      guess = _linear_prediction(evaluated, capacity)
      peak(max(guess if guess is not None else 2 * lo, lo + 1))
      continue
    # Secant through the bracket's ends, kept a quarter of the bracket away from them so
    # that a curved peak_of still shrinks the bracket geometrically.
    guess = _linear_prediction({lo: evaluated[lo], hi: evaluated[hi]}, capacity)
    margin = max(1, (hi - lo) // 4)
    peak(min(max(guess if guess is not None else (lo + hi) // 2, lo + margin), hi - margin))
