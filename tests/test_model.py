"""Model components against naive NumPy versions of the reference semantics, and each
reference-compatibility switch in both settings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.model import ModelConfig, Quirks, build_model, init_params
from neuript_jax.model.attention import attention_mask_from_tokens
from neuript_jax.model.moe import MoE
from neuript_jax.model.tsa import SegMerging

# Three blocks keep compile times short; the full 6-block model is covered by the golden tests.
TINY = ModelConfig(d_model=24, n_heads=2, d_ff=24, hidden_dim=16, hidden_dim_shared=24, T=32,
                   dropout=0.0, data="TUEV", num_classes=3, merge_layers=(1, 2, 2),
                   enc_expert=(0, 2, 4), dec_expert=(0, 2, 0, 0), cross_expert=(0, 0, 2, 0),
                   c_layers=3)


def swiglu_np(x, wi, bi, wo, bo):
  h = x @ wi + bi
  a, g = np.split(h, 2, axis=-1)
  return (a / (1 + np.exp(-a)) * g) @ wo + bo


def moe_naive(x, p, e, top_k, capacity_drop=True, renormalize=False):
  """Loop version of the reference PMoE forward (token order decides who is dropped)."""
  n = x.shape[0]
  k = math.ceil(e * top_k)
  sh = p["shared_expert"]
  out = swiglu_np(x, sh["wi"]["kernel"], sh["wi"]["bias"], sh["wo"]["kernel"], sh["wo"]["bias"])
  logits = x @ p["gate"]["kernel"] + p["gate"]["bias"]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  cap = n // e if capacity_drop else n
  ex = p["experts"]
  for j in range(e):
    tokens = [t for t in range(n) if j in top[t]][:cap]
    for t in tokens:
      w = probs[t, j] / (probs[t, top[t]].sum() if renormalize else 1.0)
      out[t] += w * swiglu_np(x[t], ex["wi_kernel"][j], ex["wi_bias"][j], ex["wo_kernel"][j],
                              ex["wo_bias"][j])
  return out


@pytest.mark.parametrize("routing,renorm,e,n", [("capacity", False, 4, 37), ("capacity", False, 6, 5),
                                               ("dropless", False, 4, 37), ("dropless", True, 3, 20),
                                               ("capacity", True, 2, 9)])
def test_moe_matches_loop_reference(routing, renorm, e, n):
  x = np.asarray(jax.random.normal(jax.random.key(1), (n, 12)), np.float64)
  moe = MoE(e, 0.5, 8, 12, 0.0, 0.008, routing, renorm)
  params = jax.tree_util.tree_map(np.asarray, jax.jit(moe.init)(jax.random.key(2),
                                                                jnp.asarray(x, jnp.float32)))
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                  jax.tree_util.tree_map(lambda v: v, params["params"],
                                                         is_leaf=lambda v: hasattr(v, "unbox")))
  params = jax.tree_util.tree_map(lambda v: v.unbox() if hasattr(v, "unbox") else v, params,
                                  is_leaf=lambda v: hasattr(v, "unbox"))
  y, aux = jax.jit(moe.apply, static_argnums=2)({"params": params}, jnp.asarray(x, jnp.float32),
                                                True)
  want = moe_naive(x, params, e, 0.5, routing == "capacity", renorm)
  np.testing.assert_allclose(np.asarray(y), want, atol=2e-5)
  assert float(aux) == 0.0


def test_capacity_drop_really_drops_and_dropless_does_not():
  x = jnp.asarray(jax.random.normal(jax.random.key(3), (40, 12)))
  cap = MoE(4, 0.5, 8, 12, routing="capacity")
  free = MoE(4, 0.5, 8, 12, routing="dropless")
  v = jax.jit(cap.init)(jax.random.key(4), x)
  _, st = cap.apply(v, x, True, mutable=["intermediates"])
  kept = np.asarray(st["intermediates"]["routing"][0]["kept"])
  assert kept.sum(0).max() <= 40 // 4 and kept.sum() < 40 * 2     # 2 of 4 experts per token
  _, st = free.apply(v, x, True, mutable=["intermediates"])
  assert np.asarray(st["intermediates"]["routing"][0]["kept"]).sum() == 40 * 2


def test_moe_aux_loss_is_importance_cv2_in_training():
  x = jnp.asarray(jax.random.normal(jax.random.key(5), (64, 12)))
  moe = MoE(4, 0.5, 8, 12, noise_std=0.0, w_importance=0.01)
  v = jax.jit(moe.init)(jax.random.key(6), x)
  _, aux = moe.apply(v, x, False)
  _, st = moe.apply(v, x, False, mutable=["intermediates"])
  probs = np.asarray(st["intermediates"]["routing"][0]["probs"], np.float64)
  imp = probs.sum(0)
  sel = np.zeros_like(probs)
  np.put_along_axis(sel, np.argsort(-probs, 1)[:, :2], 1.0, 1)
  r = probs * sel
  want = 0.01 * imp.var(ddof=1) / (imp.mean() ** 2 + 1e-8) + 4 * (r.mean(0) * r.sum(0)).sum() / 64 ** 2
  assert float(aux) == pytest.approx(want, rel=1e-4)


def test_attention_mask_rows_vs_keys():
  masked = jnp.array([[False, True, False]])
  rows = np.asarray(attention_mask_from_tokens(masked, mask_rows=True))[0]
  keys = np.asarray(attention_mask_from_tokens(masked, mask_rows=False))[0]
  assert rows.tolist() == [[1, 1, 1], [0, 1, 0], [1, 1, 1]]
  assert keys.tolist() == [[1, 0, 1], [1, 1, 1], [1, 0, 1]]   # a masked query still reads the visible keys


def test_segmerging_interleaves_and_pads_like_reference():
  x = jnp.arange(2 * 1 * 5 * 3, dtype=jnp.float32).reshape(2, 1, 5, 3)
  merge = SegMerging(2)
  v = merge.init(jax.random.key(0), x)
  inter = merge.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]
  ln_in = np.asarray(inter["intermediates"]["norm"]["__call__"][0])
  assert ln_in.shape == (2, 1, 3, 6)                       # 5 -> padded to 6 -> 3 segments
  xs = np.asarray(x)
  padded = np.concatenate([xs, xs[:, :, -1:]], axis=2)      # last segment repeated
  want = np.concatenate([padded[:, :, 0::2], padded[:, :, 1::2]], axis=-1)
  # LayerNorm output: compare after normalising want the same way
  want = (want - want.mean(-1, keepdims=True)) / np.sqrt(want.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(ln_in, want, atol=1e-5)


def _stage2(cfg, x):
  params = init_params(cfg, 2, jax.random.key(0))
  return jax.jit(build_model(cfg, 2).apply, static_argnums=(2, 3))({"params": params}, x,
                                                                     True, True)


def test_pe_leak_switch_changes_enc_out0_only_by_pe():
  x = jax.random.normal(jax.random.key(1), (2, TINY.T, TINY.data_dim))
  _, _, leak = _stage2(TINY, x)
  _, _, clean = _stage2(TINY.replace(quirks=Quirks(pe_leaks_into_embedding=False)), x)
  from neuript_jax.model.embedding import temporal_pe
  np.testing.assert_allclose(np.asarray(leak[0] - clean[0]),
                             np.broadcast_to(temporal_pe(TINY.T, TINY.d_model), leak[0].shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(leak[-1]), np.asarray(clean[-1]), atol=1e-6)


def _stage1(cfg, x, masks):
  params = init_params(cfg, 1, jax.random.key(0))
  apply = jax.jit(build_model(cfg, 1).apply, static_argnums=(4,))
  return apply({"params": params}, x, masks, masks, True)[0]


def _masks(cfg, b, key):
  m0 = jax.random.bernoulli(key, 0.5, (b, cfg.data_dim, cfg.T))
  out = [m0]
  for length in cfg.block_lengths()[1:]:
    win = cfg.T // length
    out.append(m0.reshape(b, cfg.data_dim, length, win).any(-1))
  return out


def test_mask_rows_and_decoder_input_switches_change_stage1_output():
  x = jax.random.normal(jax.random.key(1), (2, TINY.T, TINY.data_dim))
  masks = _masks(TINY, 2, jax.random.key(2))
  base = _stage1(TINY, x, masks)
  keys = _stage1(TINY.replace(quirks=Quirks(mask_rows=False)), x, masks)
  sig = _stage1(TINY.replace(quirks=Quirks(decoder_input="pe_plus_signal")), x, masks)
  assert np.abs(np.asarray(base - keys)).max() > 1e-4
  assert np.abs(np.asarray(base - sig)).max() > 1e-4
  # Paper masking (keys): masked inputs cannot reach any unmasked position's encoding, so with
  # every token of block 0 masked at (b, d) the encoder outputs ignore those values. Check the
  # weaker, exact property on attention: no unmasked query attends to a masked key.
  m = attention_mask_from_tokens(masks[0].reshape(-1, TINY.T), mask_rows=False)
  unmasked_q = ~masks[0].reshape(-1, TINY.T)[:, :, None]
  masked_k = masks[0].reshape(-1, TINY.T)[:, None, :]
  assert not bool(jnp.any(m & unmasked_q & masked_k))


def test_renormalize_switch_changes_stage2_output():
  x = jax.random.normal(jax.random.key(1), (2, TINY.T, TINY.data_dim))
  a, _, _ = _stage2(TINY, x)
  b, _, _ = _stage2(TINY.replace(quirks=Quirks(moe_renormalize=True)), x)
  c, _, _ = _stage2(TINY.replace(quirks=Quirks(moe_routing="dropless")), x)
  assert np.abs(np.asarray(a - b)).max() > 1e-5 and np.abs(np.asarray(a - c)).max() > 1e-5


def test_bf16_and_remat_run_and_agree():
  x = jax.random.normal(jax.random.key(1), (2, TINY.T, TINY.data_dim))
  ref, _, _ = _stage2(TINY, x)
  remat, _, _ = _stage2(TINY.replace(remat="block"), x)
  bf16, _, _ = _stage2(TINY.replace(dtype="bfloat16"), x)
  np.testing.assert_allclose(np.asarray(remat), np.asarray(ref), atol=1e-5)
  assert np.abs(np.asarray(bf16, np.float32) - np.asarray(ref)).max() < 0.1


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="dec_expert"):
    ModelConfig(dec_expert=(0, 0))
  with pytest.raises(ValueError, match="n_heads"):
    ModelConfig(d_model=50, n_heads=8)
  with pytest.raises(ValueError, match="moe_routing"):
    Quirks(moe_routing="sometimes")


def test_remat_policy_gives_the_same_loss_and_grads():
  """Stage 1 (encoder + decoder TSA layers, masks, dropout 0.1, hashed attention dropout);
  "dots_saveable" (a policy) and "layer_ordered" (its own backward) against "none"; "block"
  (= nothing_saveable) is checked above."""
  from neuript_jax.model.tsa import REMAT_POLICIES
  from neuript_jax.model.config import REMAT_OPTIONS
  assert set(REMAT_OPTIONS) == {"none", "layer_ordered"} | set(REMAT_POLICIES)
  x = jax.random.normal(jax.random.key(1), (2, TINY.T, TINY.data_dim))
  masks = _masks(TINY, 2, jax.random.key(2))

  def loss_and_grads(cfg):
    model = build_model(cfg, 1)
    params = init_params(cfg, 1, jax.random.key(0))

    def loss(p):
      pred, aux = model.apply({"params": p}, x, masks, masks, False,
                              rngs={"dropout": jax.random.key(5), "gate_noise": jax.random.key(6)})
      return jnp.mean(jnp.abs(pred - x)) + aux
    return jax.jit(jax.value_and_grad(loss))(params)

  base = TINY.replace(dropout=0.1)
  want = loss_and_grads(base)
  for remat in ("dots_saveable", "layer_ordered"):
    got = loss_and_grads(base.replace(remat=remat))
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-6)
    assert (jax.tree_util.tree_structure(got[1]) == jax.tree_util.tree_structure(want[1]))
    for a, b in zip(jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(want[1])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="remat must be one of"):
    TINY.replace(remat="everything")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_swiglu_gate_custom_gradient_matches_autodiff(dtype):
  """swiglu_gate's hand-written backward (sigmoid recomputed from h) equals autodiff of
  SiLU(a) * g, including large |a| where the sigmoid saturates."""
  from neuript_jax.model.layers import swiglu_gate
  h = (jax.random.normal(jax.random.key(3), (7, 10)) * 6).astype(dtype)
  dy = jax.random.normal(jax.random.key(4), (7, 5)).astype(dtype)
  plain = lambda h: jax.nn.silu(h[:, :5]) * h[:, 5:]
  np.testing.assert_array_equal(np.asarray(swiglu_gate(h), np.float32),
                                np.asarray(plain(h), np.float32))
  got = jax.vjp(swiglu_gate, h)[1](dy)[0]
  want = jax.vjp(plain, h)[1](dy)[0]
  tol = 1e-6 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_swiglu_halves_matches_swiglu_gate_and_its_gradient(dtype):
  """swiglu_halves(a, g) is swiglu_gate([a | g]): the same values and the same cotangents."""
  from neuript_jax.model.layers import swiglu_gate, swiglu_halves
  h = (jax.random.normal(jax.random.key(5), (7, 10)) * 6).astype(dtype)
  a, g = h[:, :5], h[:, 5:]
  dy = jax.random.normal(jax.random.key(6), (7, 5)).astype(dtype)
  np.testing.assert_array_equal(np.asarray(swiglu_halves(a, g), np.float32),
                                np.asarray(swiglu_gate(h), np.float32))
  da, dg = jax.vjp(swiglu_halves, a, g)[1](dy)
  dh = jax.vjp(swiglu_gate, h)[1](dy)[0]
  np.testing.assert_array_equal(np.asarray(jnp.concatenate([da, dg], -1), np.float32),
                                np.asarray(dh, np.float32))


def test_dense_column_blocks_are_the_columns_of_one_matmul():
  from neuript_jax.model.layers import Dense
  x = jax.random.normal(jax.random.key(7), (3, 4, 6))
  dense = Dense(8)
  params = dense.init(jax.random.key(8), x)
  whole = np.asarray(dense.apply(params, x))
  blocks = dense.apply(params, x, column_blocks=2)
  assert len(blocks) == 2
  np.testing.assert_allclose(np.concatenate([np.asarray(b) for b in blocks], -1), whole,
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="do not split into 3 column blocks"):
    dense.apply(params, x, column_blocks=3)


def test_swiglu_split_projection_on_cpu_gives_the_accelerator_path_numbers(monkeypatch):
  """On CPU SwiGLU runs its input projection as two matmuls (layers.SwiGLU); the output and
  every gradient equal those of the one-matmul path that accelerators take."""
  import neuript_jax.model.layers as layers
  mlp = layers.SwiGLU(6)
  x = jax.random.normal(jax.random.key(9), (5, 4))
  params = mlp.init(jax.random.key(10), x)
  loss = lambda p, x: jnp.sum(jnp.sin(mlp.apply(p, x)))
  assert jax.default_backend() == "cpu"
  jaxpr_cpu = str(jax.make_jaxpr(lambda p, x: mlp.apply(p, x))(params, x))
  cpu = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
  monkeypatch.setattr(layers, "target_platform", lambda: "tpu")
  jaxpr_acc = str(jax.make_jaxpr(lambda p, x: mlp.apply(p, x))(params, x))
  acc = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
  assert jaxpr_cpu.count("dot_general") == 3 and jaxpr_acc.count("dot_general") == 2
  monkeypatch.undo()
  tensor_mesh = jax.sharding.AbstractMesh((2,), ("tensor",))
  with jax.sharding.use_abstract_mesh(tensor_mesh):     # "mlp" sharded: one matmul
    assert str(jax.make_jaxpr(lambda p, x: mlp.apply(p, x))(params, x)).count("dot_general") == 2
  for a, b in zip(jax.tree_util.tree_leaves(cpu), jax.tree_util.tree_leaves(acc)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
