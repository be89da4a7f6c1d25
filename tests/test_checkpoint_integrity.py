"""Checkpoint integrity: a damaged latest step is detected on restore, the previous good step is
restored with a warning naming the bad one, and no folder is deleted."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.train import checkpoint as ckpt_lib
from tests.conftest import REPO

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


@pytest.fixture(autouse=True)
def _absl_warnings_on():
  """Other test modules lower absl's verbosity to ERROR at import; these tests read the
  checkpointer's warnings, so they need WARNING records to be emitted."""
  from absl import logging as absl_logging
  before = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.WARNING)
  yield
  absl_logging.set_verbosity(before)


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


# Two processes x 2 CPU devices (launch/multihost_local.sh): both write their shards, process 0
# the record; a byte flipped in process 1's shard file is caught by both, both restore step 1
# and step 2 can be saved again.
TWO_PROCESS_WORKER = r"""
import json, os, sys
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
open(os.path.join(flags["pid_dir"], flags["process_id"]), "w").write(str(os.getpid()))
import jax, jax.numpy as jnp, numpy as np
jax.distributed.initialize(flags["coordinator_address"], int(flags["num_processes"]),
                           int(flags["process_id"]))
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from neuript_jax.train import checkpoint as C
wd = flags["workdir"]
mesh = jax.make_mesh((jax.device_count(),), ("d",))
base = np.arange(128, dtype=np.float32).reshape(8, 16)
def state(s):
  w = jax.make_array_from_callback((8, 16), NamedSharding(mesh, P("d")), lambda i: (base * s)[i])
  return {"w": w, "step": jax.device_put(jnp.int32(s), NamedSharding(mesh, P()))}
c = C.Checkpointer(wd, keep=5)
for s in (1, 2):
  c.save(s, state(s), json.dumps({"s": s}))
c.wait()
multihost_utils.sync_global_devices("saved")
d2 = os.path.join(wd, "checkpoints", "2")
if jax.process_index() == 0:
  shard = [os.path.join(r, n) for r, _, ns in os.walk(d2) for n in ns
           if "ocdbt.process_1" + os.sep + "d" in r][0]
  with open(shard, "r+b") as f:
    f.seek(os.path.getsize(shard) // 2); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 1]))
multihost_utils.sync_global_devices("corrupted")
abstract = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state(0))
step, st, ds = c.restore_latest_good(abstract)
ok = all(np.array_equal(x.data, base[x.index]) for x in st["w"].addressable_shards)
print("RESULT", step, json.loads(ds)["s"], ok, flush=True)
c.save(2, state(2), json.dumps({"s": 2}))
c.wait()
multihost_utils.sync_global_devices("resaved")
print("RESAVED", C.verify_step(d2), flush=True)
c.close()
"""


def test_two_processes_agree_on_the_fallback(tmp_path):
  wd, pid_dir = tmp_path / "run", tmp_path / "pids"
  pid_dir.mkdir()
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS="2")
  env.pop("XLA_FLAGS", None)
  try:
    res = subprocess.run(
        ["bash", os.path.join(REPO, "launch", "multihost_local.sh"), "2", "-c",
         TWO_PROCESS_WORKER, f"--workdir={wd}", f"--pid_dir={pid_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  finally:
    for name in os.listdir(pid_dir):
      try:
        os.kill(int((pid_dir / name).read_text()), signal.SIGKILL)
      except (ProcessLookupError, ValueError):
        pass
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  for i in (0, 1):
    assert f"[{i}] RESULT 1 1 True" in res.stdout, res.stdout[-3000:]
    assert f"[{i}] RESAVED None" in res.stdout, res.stdout[-3000:]
  assert "step 2: state/ocdbt.process_1" in res.stdout + res.stderr
  assert sorted(os.listdir(wd / "checkpoints")) == ["1", "2", "2.corrupt"]
