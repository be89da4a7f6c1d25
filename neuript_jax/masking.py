"""AAMP (Amplitude-Aware Masked Pretraining) masks, their per-block pooling, and BERT corruption.

Pipeline used by the stage-1 train step (see `make_masks`):

  x [B, T, D] (A-law companded values)
    -> point mask [B, D, T] bool, True = masked            (`aamp_point_mask` / `random_point_mask`)
    -> one mask [B, D, L_l] per encoder block               (`block_masks_from_points`)
    -> x with the masked points corrupted 80/10/10          (`bert_corrupt`)

The block masks go to `Stage1Model(x, block_masks)`; the encoder turns them into attention masks
(`model/encoder.py::block_attention_masks`) and the decoder fills the masked positions of the
encoder outputs with the learned mask token. The loss is taken on `block_masks[0]`, i.e. the
point mask when `seg_len == 1`.

Every function here is pure and jit-compatible: all shapes are static, the per-sample number of
masked points is handled by rank arithmetic (a comparison against per-sample bounds), never by
dynamic slicing. Python-level arguments (`ratio`, `ratios`, `sort_by`, `pool`, fractions,
`block_lengths`, `merge_layers`) are static; close over them (or use `static_argnames`) under jit.

Choices made where the paper is vague (REFERENCE.md §3 and §8.1), with the defaults of
`default_masking_config()`:

- Sorting (`sort_by`, default "value"): the T values of each (sample, channel) are ranked by their
  signed value, ascending; "abs" ranks by |x| ascending. (The third-party reimplementation sorts |x|
  descending; since xi is uniform, ascending and descending give the same distribution of masks.)
- Ties (flat or clipped signals, zero padding): broken uniformly at random (a second random sort
  key), so a flat channel gets time-scattered, not time-contiguous, masked points. Consequently the
  mask is the band of n *ranks*, not the value interval [L, U] of Eq. 4: with ties the interval
  could hold more than n points, the rank band always holds exactly n. Without ties the two agree.
- Count: n = round(T * P), rounding halves up (floor(T*P + 0.5)), computed on the host in float64,
  exact per (sample, channel): T=64 gives 32 points at P=0.5 and 13/22/32 for (0.2, 0.35, 0.5).
  n == 0 is an error. The loss normalisation over masked points is the train step's business
  (`model.neuript.masked_mean_abs_error` averages over all masked points of the batch).
- Band position: xi ~ U(0, 1) independently per (sample, channel). The band is the ranks
  [s, s + n) with s = floor(xi*T - n/2 + 1/2), i.e. the band of n consecutive ranks whose centre
  s + n/2 (ranks seen as unit cells [r, r+1) on [0, T)) is nearest to xi*T. A band running past
  either end is shifted inside: s is clipped to [0, T - n] (so with P = 0.5 the bands of xi < 1/4
  all start at rank 0 and those of xi > 3/4 all end at rank T - 1).
- Ratio (`ratio`, default 0.5 = Table 9's best; `ratios`, default None): when `ratios` is given
  (the paper's "dynamic masking ratio [20,35,50]" is ratios=(0.2, 0.35, 0.5)), P is drawn uniformly
  from it independently per *sample* (every channel of a sample uses that P; the reimplementation
  draws it per batch, the paper does not say). The random mode draws the same per-sample P as the
  AAMP mode for the same key.
- Random control (`mode="random"`): per (sample, channel), n positions uniformly at random without
  replacement (the same n as AAMP), i.e. the paper's random masking at the same ratio.
- Coarser scales (`pool`, default "any", what the golden files use): block l's mask is computed
  from block l-1's mask exactly as the encoder's SegMerging merges segments: pad by repeating the
  last (win - L % win) segments when L % win != 0, then group `win` neighbours. "any": a merged
  segment is masked if any constituent is; "all": if every constituent is; "majority": if strictly
  more than half the constituents are (ties -> unmasked). Constituents are counted as the padded
  window holds them (a repeated segment counts twice), and pooling is hierarchical (block l pools
  block l-1), which matters only for "majority". With seg_len > 1 (keyword `seg_len` of
  `block_masks_from_points` / `make_masks`, default 1 as in the paper) the points are first pooled
  into tokens of seg_len points by the same rule. The same masks serve as the decoder's re-masks
  (Stage1Model's `re_masks=None`), and the encoder derives the attention masks from them.
- Corruption (`corrupt`, default True; `replace_frac` 0.8, `random_frac` 0.1, `mask_value` 0.0):
  applied to the *values* before the embedding. The paper (App. C.2) does not say whether values
  or embeddings are corrupted, and the vendored stage-1 code receives its input already prepared
  (it only hides masked tokens through attention masks and puts the mask token on encoder
  outputs, §2.5-2.6); corrupting values keeps the embedding untouched and matters because a masked
  token still attends to itself (§2.6), so without corruption it would see its own value. The
  reconstruction target must be the uncorrupted x. Each masked point independently: with
  probability replace_frac its
  value becomes mask_value (0.0: the A-law code of 0 uV, the baseline), with probability
  random_frac it becomes a value drawn from the predefined set S, otherwise it is unchanged.
  S is the multiset of all B*T*D values of the same (uncorrupted) batch: a substitute is the value
  of a uniformly random (sample, time, channel) point, drawn with replacement, so substitutes
  follow the data's amplitude distribution. Unmasked points are never changed. The fractions are
  per-point probabilities, so they hold in expectation, not exactly per channel.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

__all__ = [
    "aamp_point_mask", "random_point_mask", "band_mask_from_xi", "band_start",
    "mask_counts", "block_masks_from_points", "pool_mask", "bert_corrupt", "make_masks",
    "default_masking_config",
]

_POOLS = ("any", "all", "majority")
_SORTS = ("value", "abs")
_MODES = ("aamp", "random")


def default_masking_config() -> ml_collections.ConfigDict:
  """The `masking` config block (defaults and the reasons for them: see the module docstring).

  mode="aamp" ("aamp" | "random"), ratio=0.5, ratios=None (a tuple such as (0.2, 0.35, 0.5)
  switches to the per-sample dynamic ratio and overrides `ratio`), sort_by="value"
  ("value" | "abs"), pool="any" ("any" | "all" | "majority"), corrupt=True, mask_value=0.0,
  replace_frac=0.8, random_frac=0.1.
  """
  return ml_collections.ConfigDict(dict(
      mode="aamp", ratio=0.5,
      ratios=ml_collections.FieldReference(None, field_type=tuple),
      sort_by="value", pool="any", corrupt=True, mask_value=0.0,
      replace_frac=0.8, random_frac=0.1))


# -- counts -----------------------------------------------------------------------------------

def mask_counts(T: int, ratio: float = 0.5, ratios: Sequence[float] | None = None) -> tuple[int, ...]:
  """Number of masked points per channel for each allowed ratio: round(T*P), halves up."""
  choices = tuple(ratios) if ratios is not None else (ratio,)
  if not choices:
    raise ValueError("ratios must not be empty")
  counts = []
  for p in choices:
    p = float(p)
    if not 0.0 < p <= 1.0:
      raise ValueError(f"mask ratio must be in (0, 1], got {p}")
    n = int(math.floor(T * p + 0.5))
    if n < 1:
      raise ValueError(f"ratio {p} masks no point of T={T} samples")
    counts.append(min(n, T))
  return tuple(counts)


def _split(key):
  """Independent streams for the ratio choice, xi (or random ranks), and tie-breaking."""
  k_ratio, k_pos, k_tie = jax.random.split(key, 3)
  return k_ratio, k_pos, k_tie


def _per_sample_counts(k_ratio, batch: int, counts: tuple[int, ...]) -> jnp.ndarray:
  """[B] int32: n for each sample, drawn uniformly from `counts` (constant if one choice)."""
  table = jnp.asarray(counts, jnp.int32)
  if len(counts) == 1:
    return jnp.broadcast_to(table[0], (batch,))
  idx = jax.random.randint(k_ratio, (batch,), 0, len(counts))
  return table[idx]


# -- ranks and bands --------------------------------------------------------------------------

def _ranks(values, tie_key=None) -> jnp.ndarray:
  """values [..., T] -> rank of each entry in ascending order (a permutation of 0..T-1).

  Ties are broken by a uniform random uint32 secondary key when tie_key is given (then, in the
  2^-32 event of a second tie, by time index), else by time index.
  """
  iota = jax.lax.broadcasted_iota(jnp.int32, values.shape, values.ndim - 1)
  if tie_key is None:
    operands = (values, iota)
    num_keys = 1
  else:
    tie = jax.random.bits(tie_key, values.shape, jnp.uint32)
    operands = (values, tie, iota)
    num_keys = 2
  order = jax.lax.sort(operands, dimension=values.ndim - 1, num_keys=num_keys,
                       is_stable=True)[-1]                       # order[i] = time of rank i
  return jnp.argsort(order, axis=-1).astype(jnp.int32)            # inverse permutation


def band_start(xi, n, T: int) -> jnp.ndarray:
  """First rank of the n-rank band centred on xi*T, shifted inside [0, T): int32, xi's shape."""
  n = jnp.asarray(n, jnp.int32)
  s = jnp.floor(jnp.asarray(xi, jnp.float32) * T - n.astype(jnp.float32) / 2 + 0.5)
  return jnp.clip(s.astype(jnp.int32), 0, T - n)


def _sort_values(x_bdt, sort_by: str):
  if sort_by not in _SORTS:
    raise ValueError(f"sort_by must be one of {_SORTS}, got {sort_by!r}")
  return jnp.abs(x_bdt) if sort_by == "abs" else x_bdt


def band_mask_from_xi(x, xi, n, *, sort_by: str = "value", tie_key=None) -> jnp.ndarray:
  """The AAMP mask for explicit percentiles: x [B, T, D], xi [B, D] in [0, 1), n [B] or scalar
  (int) -> [B, D, T] bool. Ties are broken by time order unless tie_key is given."""
  x_bdt = jnp.swapaxes(x, 1, 2)
  b, d, t = x_bdt.shape
  ranks = _ranks(_sort_values(x_bdt, sort_by), tie_key)
  n_bd = jnp.broadcast_to(jnp.asarray(n, jnp.int32).reshape(-1, 1), (b, d))
  s = band_start(xi, n_bd, t)[..., None]
  return (ranks >= s) & (ranks < s + n_bd[..., None])


def aamp_point_mask(key, x, ratio: float = 0.5, *, sort_by: str = "value",
                    ratios: Sequence[float] | None = None) -> jnp.ndarray:
  """x [B, T, D] (A-law companded values) -> point mask [B, D, T] bool, True = masked.

  For each sample and channel: rank the T values (by signed value, or by |x| when
  sort_by="abs"; ties broken at random), draw xi ~ U(0,1) per (sample, channel), mask the
  n = round(T*P) points whose ranks form the contiguous band centred on xi*T in rank order; a band
  running past either end is shifted inside. P = `ratio`, or, when `ratios` is a tuple such as
  (0.2, 0.35, 0.5), P is drawn uniformly per sample from it (the paper's dynamic ratio); the count
  per channel is then exact per sample. Jit-compatible (static shapes).
  """
  b, t, d = x.shape
  k_ratio, k_xi, k_tie = _split(key)
  n = _per_sample_counts(k_ratio, b, mask_counts(t, ratio, ratios))
  xi = jax.random.uniform(k_xi, (b, d), jnp.float32)
  return band_mask_from_xi(x, xi, n, sort_by=sort_by, tie_key=k_tie)


def random_point_mask(key, x, ratio: float = 0.5, *,
                      ratios: Sequence[float] | None = None) -> jnp.ndarray:
  """The paper's random-masking control: same shapes and per-(sample, channel) counts as
  `aamp_point_mask` (and the same per-sample P for the same key), positions uniformly random
  without replacement."""
  b, t, d = x.shape
  k_ratio, k_pos, _ = _split(key)
  n = _per_sample_counts(k_ratio, b, mask_counts(t, ratio, ratios))
  ranks = _ranks(jax.random.uniform(k_pos, (b, d, t), jnp.float32))
  return ranks < n[:, None, None]


# -- per-block masks --------------------------------------------------------------------------

def pool_mask(mask, win: int, pool: str = "any") -> jnp.ndarray:
  """[..., L] bool -> [..., ceil(L / win)] merging `win` neighbours like SegMerging.

  When L % win != 0 the last (win - L % win) entries are appended again first (the reference's
  padding), so the padded window counts them twice.
  """
  if pool not in _POOLS:
    raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
  if win == 1:
    return mask
  length = mask.shape[-1]
  pad = (-length) % win
  if pad:
    if pad > length:
      raise ValueError(f"cannot merge {length} segments by {win}: the reference padding repeats "
                       f"the last {pad} segments, more than there are")
    mask = jnp.concatenate([mask, mask[..., length - pad:]], axis=-1)
  grouped = mask.reshape(mask.shape[:-1] + (mask.shape[-1] // win, win))
  if pool == "any":
    return jnp.any(grouped, axis=-1)
  if pool == "all":
    return jnp.all(grouped, axis=-1)
  return 2 * jnp.sum(grouped, axis=-1, dtype=jnp.int32) > win


def block_masks_from_points(point_mask, block_lengths: Sequence[int],
                            merge_layers: Sequence[int], *, pool: str = "any",
                            seg_len: int = 1) -> list[jnp.ndarray]:
  """point mask [B, D, T] -> list of per-block masks [B, D, L_l] following the encoder's
  SegMerging: block l merges `merge_layers[l]` neighbours of block l-1's segments (block -1 being
  the tokens: the points pooled by seg_len), padding by repeating the last segments exactly as the
  model's SegMerging does when L is not divisible. pool: "any" (masked if any constituent is; the
  golden files use this), "all", or "majority" (strictly more than half). Block 0 with merge 1 and
  seg_len 1 is the point mask itself. `block_lengths` (cfg.block_lengths()) is checked."""
  if len(block_lengths) != len(merge_layers):
    raise ValueError(f"block_lengths {tuple(block_lengths)} and merge_layers "
                     f"{tuple(merge_layers)} differ in length")
  t = point_mask.shape[-1]
  if seg_len < 1 or t % seg_len:
    raise ValueError(f"T={t} is not divisible by seg_len={seg_len}")
  cur = point_mask
  if seg_len > 1:
    cur = pool_mask(cur, seg_len, pool)
  out = []
  for i, (win, want) in enumerate(zip(merge_layers, block_lengths)):
    cur = pool_mask(cur, int(win), pool)
    if cur.shape[-1] != want:
      raise ValueError(f"block {i}: pooled length {cur.shape[-1]} != block_lengths[{i}]={want} "
                       f"(T={t}, seg_len={seg_len}, merge_layers={tuple(merge_layers)})")
    out.append(cur)
  return out


# -- corruption -------------------------------------------------------------------------------

def bert_corrupt(key, x, point_mask, *, mask_value: float = 0.0, replace_frac: float = 0.8,
                 random_frac: float = 0.1) -> jnp.ndarray:
  """BERT-style 80/10/10 corruption of the masked points of x [B, T, D] (values, before the
  embedding); point_mask [B, D, T], True = masked.

  Each masked point independently: with probability replace_frac -> mask_value; with probability
  random_frac -> a value drawn from the predefined set S; otherwise unchanged. In this
  implementation S is the multiset of all B*T*D values of the same (uncorrupted) batch: the
  substitute is the value at a uniformly random (sample, time, channel), drawn with replacement,
  so random substitutes follow the data's amplitude distribution. Unmasked points are never
  changed.
  """
  if replace_frac < 0 or random_frac < 0 or replace_frac + random_frac > 1 + 1e-9:
    raise ValueError(f"need replace_frac, random_frac >= 0 with sum <= 1, "
                     f"got {replace_frac}, {random_frac}")
  k_u, k_idx = jax.random.split(key)
  m = jnp.swapaxes(point_mask, 1, 2)                                   # [B, T, D]
  if m.shape != x.shape:
    raise ValueError(f"point_mask {point_mask.shape} does not match x {x.shape} ([B, D, T] vs "
                     "[B, T, D])")
  u = jax.random.uniform(k_u, x.shape, jnp.float32)
  flat = x.reshape(-1)
  idx = jax.random.randint(k_idx, x.shape, 0, flat.shape[0])
  substitute = flat[idx]
  out = jnp.where(u < replace_frac, jnp.asarray(mask_value, x.dtype),
                  jnp.where(u < replace_frac + random_frac, substitute, x))
  return jnp.where(m, out, x)


# -- one call for the train step --------------------------------------------------------------

def _get(cfg: Any, name: str, default):
  if isinstance(cfg, dict):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def make_masks(key, x, cfg_masking, block_lengths: Sequence[int],
               merge_layers: Sequence[int], *, seg_len: int = 1):
  """x [B, T, D] -> (point_mask [B, D, T], block_masks list of [B, D, L_l], x_corrupted [B, T, D]).

  cfg_masking: an ml_collections.ConfigDict (or any object / dict with the fields of
  `default_masking_config()`; missing fields take those defaults). Chooses AAMP vs random from
  `mode`, uses `ratio` / `ratios`, `sort_by`, `pool`, and corrupts with `bert_corrupt` when
  `corrupt` is true (else x_corrupted is x). Read on the host: close over cfg_masking under jit.
  """
  defaults = default_masking_config()
  get = lambda name: _get(cfg_masking, name, defaults[name])
  mode = get("mode")
  if mode not in _MODES:
    raise ValueError(f"masking mode must be one of {_MODES}, got {mode!r}")
  ratios = get("ratios")
  ratios = None if ratios is None else tuple(float(r) for r in ratios)
  ratio = float(get("ratio"))
  k_mask, k_corrupt = jax.random.split(key)
  if mode == "aamp":
    pm = aamp_point_mask(k_mask, x, ratio, sort_by=get("sort_by"), ratios=ratios)
  else:
    pm = random_point_mask(k_mask, x, ratio, ratios=ratios)
  blocks = block_masks_from_points(pm, block_lengths, merge_layers, pool=get("pool"),
                                   seg_len=seg_len)
  xc = x
  if bool(get("corrupt")):
    xc = bert_corrupt(k_corrupt, x, pm, mask_value=float(get("mask_value")),
                      replace_frac=float(get("replace_frac")),
                      random_frac=float(get("random_frac")))
  return pm, blocks, xc
