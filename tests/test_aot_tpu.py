"""The real XLA:TPU compiler without a TPU: topology names, the roofline, and one compile of a
small stage-1 step for a 4-chip v5p slice through `launch.aot_memory`.

libtpu is looked for in the test's environment (an installed `libtpu` package or
$TPU_LIBRARY_PATH) and then in <repo>/.venv-tpu (`pip install --no-deps --target .venv-tpu -r
requirements-tpu.txt`); the compile runs in a subprocess with that folder on PYTHONPATH, so the
test process itself never loads libtpu. Without libtpu the compile test is skipped, saying so.
"""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neuript_jax.bench import tpu
from tests.conftest import REPO

SIDE_FOLDER = REPO / ".venv-tpu"
# A stage-1 model small enough to compile in seconds: 2 blocks (one PMoE), T 16, d_model 32.
SMALL_STAGE1 = [
    "--config=neuript_jax/configs/pretrain.py:tiny", "--config.model.T=16",
    "--config.model.merge_layers=(1,2)", "--config.model.enc_expert=(0,2)",
    "--config.model.dec_expert=(0,0,0)", "--config.model.cross_expert=(0,0,0)",
    "--config.model.c_layers=2", "--config.data.global_batch_size=8",
]


def libtpu_env() -> dict | None:
  """Environment for a child that finds libtpu, or None when there is none to find."""
  if tpu.libtpu_path() is not None:
    return dict(os.environ)
  if (SIDE_FOLDER / "libtpu" / "libtpu.so").is_file():
    path = os.pathsep.join(filter(None, [str(SIDE_FOLDER), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)
  return None


def libtpu_env_or_skip() -> dict:
  env = libtpu_env()
  if env is None:
    pytest.skip("libtpu not found (neither installed nor in .venv-tpu): pip install --no-deps "
                "--target .venv-tpu -r requirements-tpu.txt")
  return env


def run_aot(args, env, timeout=900):
  return subprocess.run([sys.executable, "-m", "launch.aot_memory", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name,chips,topology_name,config", [
    ("v5p-8", 4, "v5:2x2x1", "megacore"), ("v5p-64", 32, "v5:2x4x4", "megacore"),
    ("v4-32", 16, "v4:2x2x4", "megacore"), ("v5e-256", 256, "v5e:16x16", "default"),
    ("v6e-64", 64, "v6e:8x8", "default"), ("v6e-8", 8, "v6e:2x4", "default"),
])
def test_topology_names_follow_cloud_tpu(name, chips, topology_name, config):
  t = tpu.parse_topology(name)
  assert (t.chips, t.topology_name, t.chip_config_name) == (chips, topology_name, config)
  assert tpu.parse_topology(name, num_slices=2).chips == 2 * chips


@pytest.mark.parametrize("bad", ["v5p-6", "v5p-4", "v5e-3", "v7-8", "tpu", "v5e-512"])
def test_bad_topology_names_are_refused_with_the_accepted_forms(bad):
  with pytest.raises(ValueError, match="expected v4-N and v5p-N"):
    tpu.parse_topology(bad)


def test_roofline_bounds():
  chip = tpu.CHIPS["v5p"]
  # Memory-bound: 1 TFLOP over 100 GB -> 100e9 / 2.765e12 s.
  r = tpu.roofline(1e12, 100e9, chip, samples_per_chip=4)
  assert r["bound"] == "memory"
  assert r["step_seconds"] == pytest.approx(100e9 / chip.hbm_bandwidth)
  assert r["samples_per_second_per_chip"] == pytest.approx(4 / r["step_seconds"])
  assert r["mfu_bound"] == pytest.approx(1e12 / (chip.peak_bf16_flops * r["step_seconds"]))
  # Compute-bound above the ridge; model FLOPs (no recompute) lower the MFU bound.
  r = tpu.roofline(1e15, 1e9, chip, 1, model_flops=5e14)
  assert r["bound"] == "compute" and r["mfu_bound"] == pytest.approx(0.5)
  assert tpu.chip_hours(0.1, 32, 400_000) == pytest.approx(0.1 * 400_000 * 32 / 3600)


def test_without_libtpu_the_command_says_so_and_fails(tmp_path):
  env = dict(os.environ, TPU_LIBRARY_PATH=str(tmp_path / "no_libtpu.so"))
  out = run_aot(["--topology=v5p-8", *SMALL_STAGE1], env, timeout=300)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
  assert "is not a file" in out.stderr and "requirements-tpu.txt" in out.stderr


def test_small_stage1_compiles_for_a_four_chip_v5p_slice():
  env = libtpu_env_or_skip()
  out = run_aot(["--topology=v5p-8", "--json", "--live_top=4", *SMALL_STAGE1], env)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # --live_top: the live set at the estimated peak, the model's own buffers. At paper widths
  # it is within 10% of the compiler's temporaries (BENCHMARKS.md, "What the temporaries
  # are"); on this tiny model XLA's temporaries (~0.15 GiB) hold about 0.1 GiB that the
  # estimate does not see and that does not grow with d_model, so only an upper bound here.
  peak = re.search(r"estimated peak of the step's buffers: ([\d.]+) GiB", out.stdout)
  assert peak and "the 4 largest buffers live at the peak" in out.stdout, out.stdout[-3000:]
  assert 0 < float(peak.group(1)) * 2**30 < 2.0 * result["temp_bytes"]
  assert "Stage1Model" in out.stdout.split("the 4 largest buffers live at the peak")[1]
  assert result["mesh"] == {"data": 1, "fsdp": 4, "expert": 1, "tensor": 1}
  assert result["per_chip_batch"] == 2 and result["stage"] == 1
  assert result["flops"] > 0 and result["bytes_accessed"] > 0
  assert 0 < result["argument_bytes"] and 0 < result["temp_bytes"] < result["peak_bytes"]
  assert result["roofline"]["bound"] in ("memory", "compute")
  assert "attention pallas" in out.stdout      # "auto" resolved for the TPU mesh
  # No collective-matmul loops at this size, so the cost analysis has counted every dot.
  assert result["windowed_einsum_loops"] == 0 and result["counts_complete"]
  assert result["windowed_einsum"] is True and "WARNING" not in out.stdout


MESH_PROBE = """
import json, sys
from neuript_jax.bench import tpu
out = {}
for name, slices, shape in json.loads(sys.argv[1]):
  mesh = tpu.make_tpu_mesh(tpu.parse_topology(name, slices), shape, ("data", "fsdp", "tensor"))
  out[f"{name}x{slices}"] = [dict(mesh.shape), len({d.id for d in mesh.devices.flat})]
print(json.dumps(out))
"""


def test_meshes_with_an_axis_that_splits_a_physical_axis_are_built():
  """tensor 2 over v6e-64's 8 x 8 chips (and 8 over v5e-256's 16 x 16) matches no whole
  physical axis; mesh_utils refuses it unless asked to split one, and the mesh is built."""
  env = libtpu_env_or_skip()
  cases = [("v6e-64", 1, [1, 32, 2]), ("v5e-256", 1, [1, 32, 8]), ("v5p-32", 2, [2, 8, 2]),
           ("v5p-8", 1, [1, 4, 1])]
  out = subprocess.run([sys.executable, "-c", MESH_PROBE, json.dumps(cases)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  for name, slices, shape in cases:
    layout, distinct = got[f"{name}x{slices}"]
    assert layout == dict(zip(("data", "fsdp", "tensor"), shape))
    assert distinct == shape[0] * shape[1] * shape[2]     # every chip exactly once


# Two while loops of a v5p-64 compile (fsdp 32) of the paper step, shortened, and a loop that
# is not a collective matmul.
WINDOWED_HLO = """
  %while.350 = (bf16[160,256,768]{2,1,0:T(8,128)(2,1)}, u32[]{:T(128)}) while(%tuple.5485), condition=%wide.windowed_dot_general_cond_ag.34, body=%wide.windowed_dot_general_body_ag.34.sunk, metadata={op_name="jit(train_step)/out_projection"}
  %while.7 = (bf16[1,24,768]{2,1,0}, u32[]{:T(128)}) while(%tuple.61), condition=%wide.windowed_dot_general_cond_rs.3, body=%wide.windowed_dot_general_body_rs.3
  %while.8 = (s32[], f32[4]{0}) while(%tuple.9), condition=%cond.1, body=%body.1
%wide.windowed_dot_general_body_ag.34.sunk (wide.param.1: (bf16[160,256,768], u32[])) -> (bf16[160,256,768], u32[]) {
"""


def test_collective_matmul_loops_are_counted_and_can_be_switched_off():
  assert tpu.windowed_einsum_loops(WINDOWED_HLO) == 2
  assert tpu.windowed_einsum_loops(WINDOWED_HLO.replace("windowed_dot_general", "x")) == 0
  env = {"LIBTPU_INIT_ARGS": "--xla_tpu_foo=1"}
  tpu.disable_windowed_einsum(env)
  assert env["LIBTPU_INIT_ARGS"].split() == [
      "--xla_tpu_foo=1", "--xla_tpu_enable_windowed_einsum_for_all_gather=false",
      "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false"]
