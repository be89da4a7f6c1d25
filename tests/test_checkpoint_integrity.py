"""Checkpoint integrity: a damaged latest step is detected on restore, the previous good step is
restored with a warning naming the bad one, and no folder is deleted."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.train import checkpoint as ckpt_lib

STEPS = (1, 2, 3)


def _state(step: int) -> dict:
  rng = np.random.default_rng(step)
  return {"params": {"w": jnp.asarray(rng.normal(size=(32, 128)).astype(np.float32)),
                     "b": jnp.full((5,), float(step))},
          "step": jnp.int32(step)}


def _abstract():
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _state(0))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("ckpt_template"))
  c = ckpt_lib.Checkpointer(wd, keep=5, async_save=True)
  for s in STEPS:
    c.save(s, _state(s), json.dumps({"next_batch": s}))
  c.wait()
  c.close()
  return wd


@pytest.fixture
def workdir(template, tmp_path):
  wd = str(tmp_path / "run")
  shutil.copytree(template, wd)
  return wd


def _step_dir(wd, step):
  return os.path.join(wd, "checkpoints", str(step))


def _largest_array_file(step_dir):
  paths = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state"))
           for n in ns if os.sep + "d" + os.sep in os.path.join(r, n)]
  return max(paths, key=os.path.getsize)


def _restore(wd):
  c = ckpt_lib.Checkpointer(wd, keep=5)
  try:
    return c.restore_latest_good(_abstract())
  finally:
    c.close()


def _assert_is_step(restored, step):
  got, state, data = restored
  assert got == step
  want = _state(step)
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(want["params"]["w"]))
  assert int(state["step"]) == step
  assert json.loads(data) == {"next_batch": step}


def _warnings(caplog):
  return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_every_finished_step_has_a_record_and_passes(template):
  for s in STEPS:
    d = _step_dir(template, s)
    assert os.path.isfile(os.path.join(d, ckpt_lib.INTEGRITY_FILE))
    assert ckpt_lib.verify_step(d) is None


def test_good_latest_is_restored_without_warning(workdir, caplog):
  with caplog.at_level(logging.WARNING):
    _assert_is_step(_restore(workdir), 3)
  assert "step 3" not in _warnings(caplog)


def _corrupt_truncate(d):
  f = _largest_array_file(d)
  with open(f, "r+b") as fh:
    fh.truncate(os.path.getsize(f) // 2)


def _corrupt_flip_byte(d):
  f = _largest_array_file(d)
  with open(f, "r+b") as fh:
    fh.seek(os.path.getsize(f) // 2)
    b = fh.read(1)
    fh.seek(-1, os.SEEK_CUR)
    fh.write(bytes([b[0] ^ 0x01]))


def _corrupt_missing_metadata(d):
  os.remove(os.path.join(d, "state", "_METADATA"))


def _corrupt_garbled_json(d):
  # Still valid JSON (orbax would load it): only the CRC tells.
  with open(os.path.join(d, "data", "metadata"), "w") as f:
    json.dump(json.dumps({"next_batch": 999}), f)


def _corrupt_garbled_record(d):
  with open(os.path.join(d, ckpt_lib.INTEGRITY_FILE), "w") as f:
    f.write("{not json")


@pytest.mark.parametrize("corrupt,why", [
    (_corrupt_truncate, "truncated"),
    (_corrupt_flip_byte, "CRC-32"),
    (_corrupt_missing_metadata, "state/_METADATA is missing"),
    (_corrupt_garbled_json, "data/metadata"),
    (_corrupt_garbled_record, ckpt_lib.INTEGRITY_FILE),
])
def test_bad_latest_falls_back_to_previous(workdir, caplog, corrupt, why):
  corrupt(_step_dir(workdir, 3))
  with caplog.at_level(logging.WARNING):
    restored = _restore(workdir)
  _assert_is_step(restored, 2)
  text = _warnings(caplog)
  assert "step 3" in text and why in text, text
  ckpts = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(ckpts)) == ["1", "2", "3.corrupt"]
  assert os.path.isdir(_step_dir(workdir, 2))


def test_unchecked_orbax_would_load_the_flipped_byte(workdir):
  """Why the record exists: orbax alone returns other numbers for a flipped byte."""
  _corrupt_flip_byte(_step_dir(workdir, 3))
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as m:
    out = m.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract())))
  assert not np.array_equal(np.asarray(out["state"]["params"]["w"]),
                            np.asarray(_state(3)["params"]["w"]))


def test_leftover_tmp_folder_of_a_killed_save(workdir, caplog):
  # What kill -9 during an async save leaves (observed with orbax 0.12.8): the step's tmp
  # folder with item tmp folders inside and no finished step folder.
  tmp = os.path.join(workdir, "checkpoints", "4" + ckpt_lib.TMP_SUFFIX)
  os.makedirs(os.path.join(tmp, "state" + ckpt_lib.TMP_SUFFIX))
  os.makedirs(os.path.join(tmp, "data" + ckpt_lib.TMP_SUFFIX))
  shutil.copy(os.path.join(_step_dir(workdir, 3), "_CHECKPOINT_METADATA"), tmp)
  with caplog.at_level(logging.WARNING):
    restored = _restore(workdir)
  _assert_is_step(restored, 3)
  assert "step 4" in _warnings(caplog) and "unfinished" in _warnings(caplog)
  assert os.path.isdir(tmp)


def test_bad_step_can_be_saved_again_after_fallback(workdir):
  _corrupt_flip_byte(_step_dir(workdir, 3))
  c = ckpt_lib.Checkpointer(workdir, keep=5)
  try:
    step, _, _ = c.restore_latest_good(_abstract())
    assert step == 2
    c.save(3, _state(3), json.dumps({"next_batch": 3}))
    c.wait()
  finally:
    c.close()
  _assert_is_step(_restore(workdir), 3)
  assert os.path.isdir(_step_dir(workdir, 3) + ckpt_lib.CORRUPT_SUFFIX)


def test_all_corrupted_raises_naming_the_workdir(workdir):
  for s in STEPS:
    _corrupt_truncate(_step_dir(workdir, s))
  with pytest.raises(ckpt_lib.CheckpointIntegrityError) as e:
    _restore(workdir)
  msg = str(e.value)
  assert workdir in msg and all(f"step {s}" in msg for s in STEPS), msg
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      f"{s}.corrupt" for s in STEPS]


def test_explicit_bad_step_raises(workdir):
  _corrupt_flip_byte(_step_dir(workdir, 2))
  c = ckpt_lib.Checkpointer(workdir, keep=5)
  try:
    with pytest.raises(ckpt_lib.CheckpointIntegrityError, match="CRC-32"):
      c.restore(_abstract(), step=2)
    state, data = c.restore(_abstract())     # default: latest good (3)
    assert int(state["step"]) == 3 and json.loads(data) == {"next_batch": 3}
  finally:
    c.close()


def test_step_without_record_gets_structural_checks(workdir, caplog):
  os.remove(os.path.join(_step_dir(workdir, 3), ckpt_lib.INTEGRITY_FILE))
  with caplog.at_level(logging.WARNING):
    _assert_is_step(_restore(workdir), 3)
  assert "structure only" in _warnings(caplog)
  os.remove(os.path.join(_step_dir(workdir, 3), "data", "metadata"))
  assert "data/" in ckpt_lib.verify_step(_step_dir(workdir, 3))


def test_load_params_skips_a_bad_latest(workdir):
  _corrupt_truncate(_step_dir(workdir, 3))
  params = ckpt_lib.load_params(workdir)
  np.testing.assert_array_equal(np.asarray(params["b"]), np.full((5,), 2.0))
  with pytest.raises(ckpt_lib.CheckpointIntegrityError, match="truncated"):
    ckpt_lib.load_params(_step_dir(workdir, 3))
  assert os.path.isdir(_step_dir(workdir, 3))
