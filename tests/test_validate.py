"""Config validation: one case per rule; each error names the field and its value."""

import pytest

from neuript_jax.configs import finetune as finetune_config
from neuript_jax.configs import pretrain as pretrain_config
from neuript_jax.train import validate
from neuript_jax.train.validate import ConfigError


def _summary(n_records=100, window=64, channels=20, windows=(64,)):
  return {"split": "train", "n_records": n_records, "channels": channels, "window_len": window,
          "sources": [{"path": f"/data/src{i}", "window_samples": w}
                      for i, w in enumerate(windows)]}


def _pretrain(**fields):
  c = pretrain_config.get_config("tiny")
  for k, v in fields.items():
    node = c
    *parents, leaf = k.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _finetune(**fields):
  c = finetune_config.get_config("tiny")
  c.init_from = ""
  for k, v in fields.items():
    node = c
    *parents, leaf = k.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _check_p(config, n_devices=4, n_processes=1, summary=None):
  return validate.check_pretrain(config, n_devices=n_devices, n_processes=n_processes,
                                 data_summary=summary)


def _check_f(config, n_devices=4, n_processes=1, summary=None):
  return validate.check_finetune(config, n_devices=n_devices, n_processes=n_processes,
                                 data_summary=summary if summary is not None else _summary())


def _raises(fn, field, value):
  with pytest.raises(ConfigError) as e:
    fn()
  assert f"config.{field}={value!r}" in str(e.value), str(e.value)
  return str(e.value)


def test_presets_pass():
  for size in ("tiny", "small", "paper"):
    validate.check_pretrain(pretrain_config.get_config(size), n_devices=8, n_processes=2)
    validate.check_finetune(finetune_config.get_config(size), n_devices=8, n_processes=2)


# -- intervals ------------------------------------------------------------------------------

def test_log_every_zero_is_an_error():
  _raises(lambda: _check_p(_pretrain(log_every=0)), "log_every", 0)


@pytest.mark.parametrize("field", ["eval_every", "checkpoint_every", "plot_every"])
def test_negative_interval_is_an_error(field):
  _raises(lambda: _check_p(_pretrain(**{field: -5})), field, -5)


def test_pretrain_zero_intervals_mean_after_the_last_step():
  plan = _check_p(_pretrain(eval_every=0, plot_every=0, checkpoint_every=0, total_steps=40))
  assert (plan["eval_every"], plan["plot_every"], plan["checkpoint_every"]) == (40, 40, 40)


def test_pretrain_checkpoint_every_zero_follows_eval_every():
  plan = _check_p(_pretrain(eval_every=20, checkpoint_every=0, total_steps=40))
  assert plan["checkpoint_every"] == 20


def test_finetune_zero_intervals_mean_once_per_epoch():
  plan = _check_f(_finetune(eval_every=0, checkpoint_every=0, data__global_batch_size=16),
                  summary=_summary(n_records=100))
  assert plan["steps_per_epoch"] == 6
  assert (plan["eval_every"], plan["checkpoint_every"]) == (6, 6)
  assert plan["total_steps"] == 3 * 6


def test_finetune_negative_eval_every_is_an_error():
  _raises(lambda: _check_f(_finetune(eval_every=-1)), "eval_every", -1)


# -- batch and mesh -------------------------------------------------------------------------

def test_global_batch_not_divisible_by_processes():
  msg = _raises(lambda: _check_p(_pretrain(data__global_batch_size=9), n_devices=2,
                                 n_processes=2), "data.global_batch_size", 9)
  assert "2 processes" in msg


def test_global_batch_not_divisible_by_batch_axes():
  msg = _raises(lambda: _check_p(_pretrain(data__global_batch_size=6, mesh__data=2,
                                           mesh__fsdp=2), n_devices=4),
                "data.global_batch_size", 6)
  assert "data x fsdp" in msg


def test_batch_axes_must_cover_the_processes():
  _raises(lambda: _check_p(_pretrain(data__global_batch_size=8, mesh__data=1, mesh__tensor=-1),
                           n_devices=4, n_processes=2),
          "mesh", {"data": 1, "fsdp": 1, "expert": 1, "tensor": 4})


def test_eval_batch_size_not_divisible():
  _raises(lambda: _check_f(_finetune(eval_batch_size=30), n_devices=4), "eval_batch_size", 30)


def test_moe_groups_must_divide_every_batch():
  msg = _raises(lambda: _check_p(_pretrain(model__moe_groups=3)), "model.moe_groups", 3)
  assert "data.global_batch_size=" in msg
  msg = _raises(lambda: _check_f(_finetune(model__moe_groups=8, data__global_batch_size=16,
                                           eval_batch_size=12)), "model.moe_groups", 8)
  assert "eval_batch_size=12" in msg
  assert _check_p(_pretrain(model__moe_groups=4, data__global_batch_size=8))["mesh"]


def test_negative_moe_groups_is_an_error():
  with pytest.raises(ConfigError, match="moe_groups must be an int >= 0"):
    _check_p(_pretrain(model__moe_groups=-1))


def test_unknown_mesh_axis():
  c = _pretrain()
  c.mesh.model = 2
  _raises(lambda: _check_p(c), "mesh.model", 2)


def test_mesh_does_not_match_devices():
  _raises(lambda: _check_p(_pretrain(mesh__data=2, mesh__fsdp=2), n_devices=8), "mesh",
          {"data": 2, "fsdp": 2, "expert": 1, "tensor": 1})


def test_mesh_minus_one_does_not_divide():
  _raises(lambda: _check_p(_pretrain(mesh__fsdp=3), n_devices=4), "mesh.data", -1)


def test_mesh_two_minus_ones():
  _raises(lambda: _check_p(_pretrain(mesh__fsdp=-1)), "mesh.fsdp", -1)


def test_mesh_size_zero():
  _raises(lambda: _check_p(_pretrain(mesh__expert=0)), "mesh.expert", 0)


def test_mesh_resolves_minus_one():
  assert _check_p(_pretrain(mesh__fsdp=2), n_devices=8)["mesh"] == {
      "data": 4, "fsdp": 2, "expert": 1, "tensor": 1}


def test_unknown_mesh_axis_in_logical_axis_rules():
  rules = (("batch", ("data", "fsdp")), ("embed", "fdsp"))
  _raises(lambda: _check_p(_pretrain(logical_axis_rules=rules)), "logical_axis_rules[1]",
          ("embed", "fdsp"))


# -- data and model -------------------------------------------------------------------------

def test_window_len_longer_than_the_records():
  msg = _raises(lambda: _check_p(_pretrain(), summary=_summary(window=64, windows=(64, 32))),
                "data.window_len", 64)
  assert "/data/src1 (32 samples)" in msg


def test_window_len_differs_from_model_T():
  _raises(lambda: _check_p(_pretrain(data__window_len=128)), "data.window_len", 128)


def test_model_T_differs_from_the_data():
  _raises(lambda: _check_f(_finetune(), summary=_summary(window=256, windows=(256,))),
          "model.T", 64)


def test_channels_differ_from_the_model():
  _raises(lambda: _check_p(_pretrain(), summary=_summary(channels=19)), "model.data", "Stage1")


def test_invalid_model_block():
  with pytest.raises(ConfigError, match="config.model: d_model 30 is not divisible by n_heads 4"):
    _check_p(_pretrain(model__d_model=30))


def test_batch_larger_than_the_records():
  _raises(lambda: _check_f(_finetune(data__global_batch_size=16), summary=_summary(n_records=10)),
          "data.global_batch_size", 16)


def test_finite_epochs_shorter_than_total_steps():
  _raises(lambda: _check_p(_pretrain(data__num_epochs=1, total_steps=150),
                           summary=_summary(n_records=80)), "data.num_epochs", 1)


def test_init_from_missing(tmp_path):
  missing = str(tmp_path / "nope")
  _raises(lambda: _check_p(_pretrain(init_from=missing)), "init_from", missing)


# -- steps and schedule ---------------------------------------------------------------------

def test_total_steps_zero_pretraining():
  _raises(lambda: _check_p(_pretrain(total_steps=0)), "total_steps", 0)


def test_total_steps_shorter_than_warmup():
  msg = _raises(lambda: _check_p(_pretrain(total_steps=5)), "total_steps", 5)
  assert "pct_start=0.15" in msg


def test_finetune_epochs_shorter_than_warmup():
  _raises(lambda: _check_f(_finetune(epochs=1, data__global_batch_size=16),
                           summary=_summary(n_records=80)), "total_steps", 5)


def test_no_warmup_is_allowed():
  _check_p(_pretrain(total_steps=5, optim__pct_start=0.0))


def test_pct_start_one():
  _raises(lambda: _check_p(_pretrain(optim__pct_start=1.0)), "optim.pct_start", 1.0)


def test_unknown_schedule():
  _raises(lambda: _check_p(_pretrain(optim__schedule="linear")), "optim.schedule", "linear")


def test_nonpositive_lr():
  _raises(lambda: _check_p(_pretrain(optim__lr=0.0)), "optim.lr", 0.0)


def test_finetune_total_steps_negative():
  _raises(lambda: _check_f(_finetune(total_steps=-3)), "total_steps", -3)


def test_finetune_no_epochs():
  _raises(lambda: _check_f(_finetune(epochs=0, total_steps=0)), "epochs", 0)


# -- policies -------------------------------------------------------------------------------

def test_unknown_nonfinite_policy():
  _raises(lambda: _check_p(_pretrain(nonfinite="ignore")), "nonfinite", "ignore")


def test_keep_checkpoints_zero():
  _raises(lambda: _check_p(_pretrain(keep_checkpoints=0)), "keep_checkpoints", 0)


def test_eval_batches_zero():
  _raises(lambda: _check_p(_pretrain(eval_batches=0)), "eval_batches", 0)


def test_unknown_loss():
  _raises(lambda: _check_f(_finetune(loss="focal")), "loss", "focal")


def test_unknown_select_metric():
  _raises(lambda: _check_f(_finetune(select_metric="accuracy")), "select_metric", "accuracy")


def test_unknown_decision_rule():
  _raises(lambda: _check_f(_finetune(decision_rule="youden")), "decision_rule", "youden")


def test_validation_decision_rule_on_a_multiclass_task():
  msg = _raises(lambda: _check_f(_finetune(decision_rule="validation", model__num_classes=4)),
                "decision_rule", "validation")
  assert "binary tasks only" in msg


def test_label_smoothing_one():
  _raises(lambda: _check_f(_finetune(label_smoothing=1.0)), "label_smoothing", 1.0)


def test_negative_bal_bce_k():
  _raises(lambda: _check_f(_finetune(bal_bce_k=-0.1)), "bal_bce_k", -0.1)


def test_negative_patience():
  _raises(lambda: _check_f(_finetune(early_stopping_patience=-1)), "early_stopping_patience", -1)


def test_negative_freeze_epochs():
  _raises(lambda: _check_f(_finetune(freeze_epochs=-1)), "freeze_epochs", -1)


# -- sweeps ---------------------------------------------------------------------------------

def test_sweep_parallel_zero():
  with pytest.raises(ConfigError, match="--parallel=0"):
    validate.check_sweep_args(parallel=0, devices_per_run=0, n_devices=1)


def test_sweep_devices_per_run_too_many():
  with pytest.raises(ConfigError, match="--devices_per_run=4"):
    validate.check_sweep_args(parallel=2, devices_per_run=4, n_devices=4)
  validate.check_sweep_args(parallel=2, devices_per_run=2, n_devices=4)
