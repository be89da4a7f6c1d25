import jax
import numpy as np
import pytest

from neuript_jax import convert
from neuript_jax.model import ModelConfig

CFG = ModelConfig(d_model=24, n_heads=2, d_ff=24, hidden_dim=16, hidden_dim_shared=24, T=32,
                  data="BCICIV-2A", num_classes=4, c_layers=3,
                  dec_expert=(0, 2, 0, 0, 0, 0, 3), cross_expert=(2, 0, 0, 0, 0, 0, 0))


def random_params(cfg, stage, seed=0):
  """Random values in the shapes of the Flax params (no model compile needed)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                                convert.param_template(cfg, stage))


@pytest.mark.parametrize("stage", [1, 2])
def test_round_trip_is_exact(stage):
  params = random_params(CFG, stage)
  sd = convert.to_reference(params, CFG, stage, stage1_batch_size=2)
  back = convert.from_reference(sd, CFG, stage)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), b)
  # reference layout: Linear weights are [out, in], experts are separate modules
  assert sd["enc_value_embedding.linear.weight"].shape == (24, 1)
  assert sd["encoder.encode_blocks.5.encode_layers.0.MLP1.experts.5.net.0.weight"].shape == (32, 24)
  assert sd["encoder.encode_blocks.0.encode_layers.0.MLP1.0.weight"].shape == (48, 24)
  if stage == 1:
    assert sd["dec_in"].shape == (2, 16, 32, 24)
    assert "decoder.decode_layers.6.self_attention.MLP1.experts.2.net.2.bias" in sd
    assert "decoder.decode_layers.0.MLP.shared_expert.net.0.weight" in sd


def test_npz_and_pth_files_round_trip(tmp_path):
  torch = pytest.importorskip("torch")
  params = random_params(CFG, 2, 1)
  sd = convert.to_reference(params, CFG, 2)
  for name in ("w.npz", "w.pth"):
    convert.save_state_dict(sd, str(tmp_path / name))
    loaded = convert.load_state_dict(str(tmp_path / name))
    back = convert.from_reference(loaded, CFG, 2)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
      np.testing.assert_array_equal(np.asarray(a), b)
  # a DDP-style checkpoint: {"state_dict": {"module.<name>": tensor}}
  wrapped = {"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}}
  torch.save(wrapped, tmp_path / "ddp.pth")
  assert set(convert.load_state_dict(str(tmp_path / "ddp.pth"))) == set(sd)


def test_mismatches_are_listed():
  params = random_params(CFG, 2)
  sd = convert.to_reference(params, CFG, 2)
  sd.pop("encoder.encode_blocks.1.merge_layer.norm.weight")
  sd["surprise.weight"] = np.zeros(3)
  sd["classification_head.classification_layer.weight"] = np.zeros((4, 7))
  with pytest.raises(convert.ConversionError) as e:
    convert.from_reference(sd, CFG, 2)
  msg = str(e.value)
  assert "missing 1: encoder.encode_blocks.1.merge_layer.norm.weight" in msg
  assert "unexpected 1: surprise.weight" in msg
  assert "classification_head.classification_layer.weight: file (4, 7)" in msg


def test_pe_buffers_are_skipped_on_import_and_rebuilt_on_export():
  params = random_params(CFG, 2)
  sd = convert.to_reference(params, CFG, 2)
  pe = "encoder.encode_blocks.0.encode_layers.0.spacial_PE.pe_3d"
  assert sd[pe].shape == (1, 16, 24)
  sd[pe] = np.full((1, 99, 24), 7.0)      # stale buffer from another montage: ignored
  convert.from_reference(sd, CFG, 2)
