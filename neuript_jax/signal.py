"""Value transforms applied to EEG in microvolts before the model.

A-law companding (REFERENCE.md §1.1, the reference's `a_law_compress`): with A = 0.25,
  y = sgn(x) * A|x| / (e + ln A)            for |x| < 1/A (= 4 µV),
  y = sgn(x) * (1 + ln(A|x|)) / (e + ln A)  otherwise.
The denominator is e + ln A (about 1.3317), as in the reference, not the textbook 1 + ln A.
Shards store µV; the loader applies this at read time.
"""

from __future__ import annotations

import math

import numpy as np


def a_law_compress(x, a: float = 0.25, xp=np):
  """A-law companding of x (µV), elementwise; xp is numpy or jax.numpy."""
  abs_x = xp.abs(x)
  denom = math.e + math.log(a)
  small = a * abs_x / denom
  large = (1.0 + xp.log(xp.maximum(a * abs_x, 1e-30))) / denom
  return xp.sign(x) * xp.where(abs_x < 1.0 / a, small, large)


def a_law_expand(y, a: float = 0.25, xp=np):
  """Inverse of a_law_compress: companded values -> µV."""
  denom = math.e + math.log(a)
  abs_y = xp.abs(y) * denom
  threshold = 1.0  # a * (1/a) at the knee: A|x| = 1
  small = abs_y / a
  large = xp.exp(abs_y - 1.0) / a
  return xp.sign(y) * xp.where(abs_y < threshold, small, large)
