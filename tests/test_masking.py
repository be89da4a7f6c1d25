"""AAMP masks, random masks, per-block pooling and BERT corruption (neuript_jax/masking.py)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from neuript_jax import masking as M
from neuript_jax.model.tsa import pad_to_multiple

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN_MERGES = (1, 4, 1, 2, 1, 2)


def block_lengths(T, merges, seg_len=1):
  out, length = [], T // seg_len
  for m in merges:
    length = math.ceil(length / m)
    out.append(length)
  return out


# Jitted wrappers; every static argument is always passed positionally so that equal settings
# share one compilation (the jit cache distinguishes omitted defaults from passed ones).
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _aamp(key, x, ratio, sort_by, ratios):
  return M.aamp_point_mask(key, x, ratio, sort_by=sort_by, ratios=ratios)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _rand(key, x, ratio, ratios):
  return M.random_point_mask(key, x, ratio, ratios=ratios)


@functools.partial(jax.jit, static_argnums=(3,))
def _band(x, xi, n, sort_by):
  return M.band_mask_from_xi(x, xi, n, sort_by=sort_by)


def aamp(key, x, ratio=0.5, sort_by="value", ratios=None):
  return _aamp(key, x, ratio, sort_by, ratios)


def rand(key, x, ratio=0.5, ratios=None):
  return _rand(key, x, ratio, ratios)


def band(x, xi, n, sort_by="value"):
  return _band(x, xi, n, sort_by)


# Most tests share one shape and two settings (0.5/"value", 0.35/"abs"), so each jitted mask
# function compiles only a few times: random-number generation dominates the compile time.
SHAPE = (64, 256, 32)
B, T, D = SHAPE
BIG = SHAPE
N50, N35 = 128, 90                                                    # round(256 * P)


def data(seed, shape=SHAPE):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def masked_ranks(m, ranks):
  """[B, D, T] mask with n points per row -> their ranks, sorted, [B, D, n] (n from row 0)."""
  n = int(m.reshape(-1, m.shape[-1])[0].sum())
  assert (m.sum(-1) == n).all()
  return np.sort(np.where(m, ranks, m.shape[-1]), -1)[..., :n]


def np_ranks(x, sort_by="value"):
  """[B, T, D] -> ranks [B, D, T] (continuous data: no ties)."""
  v = np.swapaxes(np.asarray(x), 1, 2)
  v = np.abs(v) if sort_by == "abs" else v
  return np.argsort(np.argsort(v, axis=-1, kind="stable"), axis=-1)


# -- counts -----------------------------------------------------------------------------------

def test_exact_count_fixed_ratio():
  for ratio, n in [(0.5, 32), (0.3, 19), (0.2, 13), (0.35, 22), (1.0, 64), (0.99, 63)]:
    assert M.mask_counts(64, ratio) == (n,)
  assert M.mask_counts(T, 0.5) == (N50,) and M.mask_counts(T, 0.35) == (N35,)
  x = data(0)
  for ratio, sort_by, n in [(0.5, "value", N50), (0.35, "abs", N35)]:
    m = np.asarray(aamp(jax.random.key(1), x, ratio, sort_by))
    assert m.shape == (B, D, T) and m.dtype == bool
    assert (m.sum(-1) == n).all(), (ratio, sort_by)
  r = np.asarray(rand(jax.random.key(1), x, 0.5))
  assert r.shape == (B, D, T) and (r.sum(-1) == N50).all()
  # Any n, including the whole channel, through the explicit-xi band.
  xi = jnp.asarray(np.random.default_rng(2).random((B, D), dtype=np.float32))
  for n in (1, 13, T - 1, T):
    assert (np.asarray(band(x, xi, jnp.full((B,), n))).sum(-1) == n).all()


def test_exact_count_dynamic_ratio_per_sample():
  ratios = (0.2, 0.35, 0.5)
  assert M.mask_counts(64, ratios=ratios) == (13, 22, 32)
  counts = M.mask_counts(BIG[1], ratios=ratios)
  assert counts == (51, 90, 128)
  x = data(1)
  key = jax.random.key(3)
  m = np.asarray(aamp(key, x, ratios=ratios)).sum(-1)                 # [B, D]
  assert (m == m[:, :1]).all()                                        # one P per sample
  assert set(np.unique(m)) == set(counts)                             # all three drawn
  assert min(np.bincount(np.searchsorted(counts, m[:, 0]))) >= 12      # roughly uniform (21 each)
  # (random mode with the same key draws the same P per sample: checked in test_make_masks)


def test_ties_exact_count_and_random_tie_break():
  x = jnp.zeros(SHAPE)                                                # flat: every value tied
  m = np.asarray(aamp(jax.random.key(0), x, 0.5))
  assert (m.sum(-1) == N50).all()
  times = masked_ranks(m, np.arange(T))                               # masked time indices
  assert not (times[..., -1] - times[..., 0] == N50 - 1).any()        # ties broken at random
  assert abs(m.mean(axis=(0, 1)) - 0.5).max() < 0.1                   # ... uniformly in time
  x = jnp.round(data(2) * 2) / 2                                      # many ties
  assert (np.asarray(aamp(jax.random.key(0), x, 0.35, "abs")).sum(-1) == N35).all()


def test_invalid_ratios():
  with pytest.raises(ValueError):
    M.mask_counts(64, 0.0)
  with pytest.raises(ValueError):
    M.mask_counts(64, 1.5)
  with pytest.raises(ValueError):
    M.mask_counts(4, 0.1)                                             # rounds to 0 points


# -- the band ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sort_by", ["value", "abs"])
def test_band_contiguous_in_rank_order(sort_by):
  x = data(4)
  ratio, n = {"value": (0.5, N50), "abs": (0.35, N35)}[sort_by]
  m = np.asarray(aamp(jax.random.key(5), x, ratio, sort_by))
  r = masked_ranks(m, np_ranks(x, sort_by))
  assert r.shape == (B, D, n)
  assert (np.diff(r, axis=-1) == 1).all()                             # consecutive ranks


def test_band_centred_on_xi_and_shifted_inside():
  n = 80
  x = data(6)
  xi = np.full((B, D), 0.5, np.float32)
  xi[0, :9] = [0.0, 1e-6, 0.1, 0.3, 0.5, 0.62, 0.9, 0.999, 1 - 1e-7]
  xi = jnp.asarray(xi)
  m = np.asarray(band(x, xi, jnp.full((B,), n)))
  ranks = np_ranks(x)[0]
  starts = [int(np.sort(ranks[d][m[0, d]])[0]) for d in range(9)]
  assert starts[0] == 0 and starts[1] == 0 and starts[2] == 0        # near 0: shifted to rank 0
  assert starts[-1] == T - n and starts[-2] == T - n and starts[-3] == T - n   # near 1: end
  for d in (3, 4, 5):                                                 # unclipped: centred
    centre = starts[d] + n / 2
    assert abs(centre - float(xi[0, d]) * T) <= 0.5, (d, starts[d])
  assert starts[4] == 88                                              # xi=.5: ranks 88..167
  # The start rule itself, over a fine grid of xi and odd/even n.
  grid = np.linspace(0, 1, 1001, endpoint=False, dtype=np.float32)
  for t, nn in [(64, 1), (64, 7), (64, 32), (64, 63), (64, 64), (1000, 333)]:
    s = np.asarray(M.band_start(jnp.asarray(grid), nn, t))
    assert s.min() == 0 and s.max() == t - nn
    inside = (grid * t >= nn / 2 + 0.5) & (grid * t <= t - nn / 2 - 0.5)
    assert np.all(np.abs(s[inside] + nn / 2 - grid[inside] * t) <= 0.5 + 1e-3)


def test_aamp_uses_xi_stream():
  """aamp_point_mask == band_mask_from_xi with the xi the key yields (ties at random)."""
  x = data(7)
  key = jax.random.key(11)
  _, k_xi, _ = M._split(key)
  xi = jax.random.uniform(k_xi, (B, D), jnp.float32)
  want = band(x, xi, jnp.full((B,), N50))
  np.testing.assert_array_equal(np.asarray(aamp(key, x, 0.5)), np.asarray(want))


def test_sort_by_abs_ranks_by_magnitude():
  x = data(8)
  xi0 = jnp.zeros((B, D))
  n = jnp.full((B,), 16)
  v = np.swapaxes(np.asarray(x), 1, 2)
  m_abs = np.asarray(band(x, xi0, n, "abs"))                          # 16 smallest |x|
  m_val = np.asarray(band(x, xi0, n, "value"))                        # 16 most negative
  thr_abs = np.sort(np.abs(v), -1)[..., 15:16]
  thr_val = np.sort(v, -1)[..., 15:16]
  np.testing.assert_array_equal(m_abs, np.abs(v) <= thr_abs)
  np.testing.assert_array_equal(m_val, v <= thr_val)
  # Sign-flipping a channel changes nothing for "abs" but does for "value".
  flipped = x * jnp.where(jnp.arange(D) % 2 == 0, -1.0, 1.0)
  key = jax.random.key(2)
  np.testing.assert_array_equal(np.asarray(aamp(key, x, 0.35, "abs")),
                                np.asarray(aamp(key, flipped, 0.35, "abs")))
  assert not np.array_equal(np.asarray(aamp(key, x, 0.5, "value")),
                            np.asarray(aamp(key, flipped, 0.5, "value")))


def test_determinism_and_key_dependence():
  x = data(9)
  for fn in (aamp, rand):
    a = np.asarray(fn(jax.random.key(0), x, 0.5))
    b = np.asarray(fn(jax.random.key(0), x, 0.5))
    c = np.asarray(fn(jax.random.key(1), x, 0.5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a != c).mean() > 0.2


def test_xi_distribution_uniform():
  """Band centres over 2048 (sample, channel) draws: (start + n/2) / T = clip(xi, P/2, 1 - P/2)
  up to 1/(2T), so a mass P/2 at each end and uniform in between (fixed seeds)."""
  x = data(10)
  ranks = np_ranks(x)
  # P = 0.5: a quarter of the bands at each end, centres uniform on [1/4, 3/4] in between.
  start = np.where(np.asarray(aamp(jax.random.key(7), x, 0.5)), ranks, T).min(-1).ravel()
  assert abs((start == 0).mean() - 0.25) < 0.03
  assert abs((start == T - N50).mean() - 0.25) < 0.03
  inner = (start[(start > 0) & (start < T - N50)] + N50 / 2) / T
  ks = stats.kstest(inner, "uniform", args=(0.25, 0.5))
  assert ks.statistic < 0.05, ks
  # Dynamic ratio: per P in {0.2, 0.35, 0.5}, the same law with its own clipping.
  m = np.asarray(aamp(jax.random.key(3), x, ratios=(0.2, 0.35, 0.5)))
  n = m.sum(-1)
  start = np.where(m, ranks, T).min(-1)
  for nn in (51, 90, 128):
    st = start[n == nn]
    lo, hi = nn / 2 / T, 1 - nn / 2 / T
    assert st.size > 400
    assert abs((st == 0).mean() - lo) < 0.06 and abs((st == T - nn).mean() - lo) < 0.06
    inner = (st[(st > 0) & (st < T - nn)] + nn / 2) / T
    ks = stats.kstest(inner, "uniform", args=(lo, hi - lo))
    assert ks.statistic < 0.08, (nn, ks)


def test_random_mode_positions_uniform_and_not_banded():
  x = data(11)
  r = np.asarray(rand(jax.random.key(4), x, 0.5))
  assert (r.sum(-1) == T // 2).all()
  freq = r.mean(axis=(0, 1))                                          # per time index
  assert np.abs(freq - 0.5).max() < 0.06
  ranks = np_ranks(x)
  s = np.sort(np.where(r, ranks, -1), -1)[..., T // 2:]              # masked ranks, sorted
  assert not (s[..., -1] - s[..., 0] == T // 2 - 1).any()             # never a rank band


# -- block masks ------------------------------------------------------------------------------

def test_block_masks_reproduce_golden():
  path = SHARED / "golden" / "stage1_tiny.npz"
  if not path.exists():
    pytest.skip(f"golden file not found at {path}")
  z = np.load(path)
  mask0 = z["in/mask_0"]
  T = mask0.shape[-1]
  assert T == 64
  lengths = block_lengths(T, GOLDEN_MERGES)
  fn = jax.jit(lambda m: M.block_masks_from_points(m, lengths, GOLDEN_MERGES, pool="any"))
  blocks = fn(jnp.asarray(mask0))
  assert len(blocks) == 6
  for i, b in enumerate(blocks):
    np.testing.assert_array_equal(np.asarray(b), z[f"in/mask_{i}"], err_msg=f"block {i}")


def test_pool_semantics():
  m = jnp.asarray([[[1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]]], bool)
  want = {"any": [1, 1, 1, 1], "all": [0, 0, 0, 1], "majority": [0, 0, 1, 1]}
  for pool, w in want.items():
    got = M.block_masks_from_points(m, [16, 4], [1, 4], pool=pool)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(m))  # merge 1 = point mask
    np.testing.assert_array_equal(np.asarray(got[1])[0, 0], np.asarray(w, bool), err_msg=pool)
  # majority is strict: 2 of 4 -> unmasked, and pooling is hierarchical.
  m2 = jnp.asarray([[[1, 1, 0, 0, 1, 1, 1, 0]]], bool)
  got = M.block_masks_from_points(m2, [4, 2], [2, 2], pool="majority")
  np.testing.assert_array_equal(np.asarray(got[0])[0, 0], [1, 0, 1, 0])   # 2/2, 0/2, 2/2, 1/2
  np.testing.assert_array_equal(np.asarray(got[1])[0, 0], [0, 0])          # 1/2, 1/2
  with pytest.raises(ValueError):
    M.block_masks_from_points(m2, [4], [2], pool="mean")


def _model_pooling(mask, win, pool):
  """Pool by running the model's own padding (tsa.pad_to_multiple) and SegMerging's reshape."""
  f = mask.astype(jnp.float32)[..., None]                             # [B, D, L, 1]
  f = pad_to_multiple(f, win)
  b, d, l, _ = f.shape
  g = f.reshape(b, d, l // win, win)
  return {"any": g.max(-1) > 0, "all": g.min(-1) > 0,
          "majority": g.sum(-1) * 2 > win}[pool]


@pytest.mark.parametrize("pool", ["any", "all", "majority"])
def test_padding_path_matches_model_segmerging(pool):
  T, merges = 30, (1, 4, 3, 2, 1)                                     # 30 -> 8 -> 3 -> 2 -> 2
  lengths = block_lengths(T, merges)
  assert lengths == [30, 8, 3, 2, 2]
  pm = jnp.asarray(np.random.default_rng(int(pool == "all")).random((3, 5, T)) < 0.6)
  blocks = jax.jit(lambda m: M.block_masks_from_points(m, lengths, merges, pool=pool))(pm)
  cur = pm
  for i, win in enumerate(merges):
    cur = _model_pooling(cur, win, pool) if win > 1 else cur
    np.testing.assert_array_equal(np.asarray(blocks[i]), np.asarray(cur), err_msg=f"{i}")
  # Explicit: L=5, win=4 pads with segments 2, 3, 4 -> windows (0,1,2,3) and (4,2,3,4).
  m = jnp.asarray([[[0, 0, 1, 0, 0]]], bool)
  np.testing.assert_array_equal(np.asarray(M.pool_mask(m, 4, "any"))[0, 0], [1, 1])
  with pytest.raises(ValueError):
    M.block_masks_from_points(pm, [30, 9, 3, 2, 2], merges)             # wrong length
  with pytest.raises(ValueError):
    M.pool_mask(jnp.ones((1, 1, 1), bool), 4)                         # pad > L: model fails too


def test_seg_len_pools_points_into_tokens():
  pm = jnp.asarray([[[1, 1, 0, 1, 0, 0, 1, 1]]], bool)
  got = M.block_masks_from_points(pm, [4, 2], [1, 2], seg_len=2, pool="any")
  np.testing.assert_array_equal(np.asarray(got[0])[0, 0], [1, 1, 0, 1])
  np.testing.assert_array_equal(np.asarray(got[1])[0, 0], [1, 1])
  got = M.block_masks_from_points(pm, [4, 2], [1, 2], seg_len=2, pool="all")
  np.testing.assert_array_equal(np.asarray(got[0])[0, 0], [1, 0, 0, 1])


# -- corruption -------------------------------------------------------------------------------

def test_bert_corrupt_fractions_and_unmasked_unchanged():
  x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, BIG).astype(np.float32))
  pm = rand(jax.random.key(1), x, 0.5)
  fn = jax.jit(lambda k, x, m, v=0.0: M.bert_corrupt(k, x, m, mask_value=v))
  xc = np.asarray(fn(jax.random.key(2), x, pm, 0.0))
  xn = np.asarray(x)
  m = np.swapaxes(np.asarray(pm), 1, 2)
  np.testing.assert_array_equal(xc[~m], xn[~m])                       # exactly unchanged
  masked_in, masked_out = xn[m], xc[m]
  replaced = masked_out == 0.0
  same = masked_out == masked_in
  random_sub = ~replaced & ~same
  assert masked_in.size == x.size // 2
  assert abs(replaced.mean() - 0.8) < 0.005
  assert abs(same.mean() - 0.1) < 0.005
  assert abs(random_sub.mean() - 0.1) < 0.005
  assert np.isin(masked_out[random_sub], xn).all()                    # substitutes come from S
  # S is the whole batch: the substitutes follow its distribution (uniform on [0.5, 1)).
  ks = stats.kstest(masked_out[random_sub], "uniform", args=(0.5, 0.5))
  assert ks.statistic < 0.015
  np.testing.assert_array_equal(xc, np.asarray(fn(jax.random.key(2), x, pm, 0.0)))  # determinism
  # Another mask value (traced: same compilation).
  xc2 = np.asarray(fn(jax.random.key(2), x, pm, -2.0))
  np.testing.assert_array_equal(xc2 == -2.0, xc == 0.0)
  np.testing.assert_array_equal(xc2[xc2 != -2.0], xc[xc != 0.0])
  with pytest.raises(ValueError):
    M.bert_corrupt(jax.random.key(3), x, pm, replace_frac=0.8, random_frac=0.3)


# -- config and the one-call API --------------------------------------------------------------

def test_default_config():
  c = M.default_masking_config()
  assert (c.mode, c.ratio, c.ratios, c.sort_by, c.pool, c.corrupt) == (
      "aamp", 0.5, None, "value", "any", True)
  assert (c.mask_value, c.replace_frac, c.random_frac) == (0.0, 0.8, 0.1)
  c.ratios = (0.2, 0.35, 0.5)                                         # overridable as a tuple
  assert c.ratios == (0.2, 0.35, 0.5)


def test_make_masks():
  x = data(12, (16, 64, 20))                                          # the golden geometry
  lengths = block_lengths(64, GOLDEN_MERGES)
  key = jax.random.key(5)
  c = M.default_masking_config()
  c.ratios = (0.2, 0.35, 0.5)                                         # dynamic, per sample

  def run(cfg):
    return jax.jit(lambda k, x: M.make_masks(k, x, cfg, lengths, GOLDEN_MERGES))(key, x)

  pm, blocks, xc = run(c)
  counts = np.asarray(pm).sum(-1)
  assert pm.shape == (16, 20, 64) and (counts == counts[:, :1]).all()
  assert set(np.unique(counts)) == {13, 22, 32}
  assert [b.shape for b in blocks] == [(16, 20, L) for L in lengths]
  np.testing.assert_array_equal(np.asarray(blocks[0]), np.asarray(pm))
  for b, want in zip(blocks, M.block_masks_from_points(pm, lengths, GOLDEN_MERGES)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(want))
  m = np.swapaxes(np.asarray(pm), 1, 2)
  xn, xcn = np.asarray(x), np.asarray(xc)
  np.testing.assert_array_equal(xcn[~m], xn[~m])
  assert (xcn[m] == 0).mean() > 0.6
  # The AAMP mask is a band in rank order.
  ranks = np_ranks(x)
  for mb, rb in zip(np.asarray(pm).reshape(-1, 64), ranks.reshape(-1, 64)):
    r = np.sort(rb[mb])
    assert r[-1] - r[0] == len(r) - 1

  # A plain dict works too (missing fields -> defaults): random mode, dynamic ratio, no corruption.
  c2 = {"mode": "random", "corrupt": False, "ratios": [0.2, 0.35, 0.5], "pool": "all"}
  pm2, blocks2, xc2 = run(c2)
  np.testing.assert_array_equal(np.asarray(xc2), xn)                  # no corruption
  np.testing.assert_array_equal(np.asarray(pm2).sum(-1), counts)   # same P per sample, same key
  assert not np.array_equal(np.asarray(pm2), np.asarray(pm))
  assert np.asarray(blocks2[5]).mean() < np.asarray(pm2).mean()       # "all" shrinks
  with pytest.raises(ValueError):
    M.make_masks(key, x, {"mode": "block"}, lengths, GOLDEN_MERGES)
