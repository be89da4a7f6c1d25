"""launch/gpu_check.sh (syntax, run and bundle dry runs) and its helpers: the float16 shard
pack, the memory search of launch/gpu_memory.py, and the report tables."""

import json
import os
import subprocess

import numpy as np
import pytest

from tests.conftest import REPO

SCRIPT = REPO / "launch" / "gpu_check.sh"


def _dry_run(*args, **env):
  full = dict(os.environ, **env)
  return subprocess.run(["bash", str(SCRIPT), *args, "--dry_run"], capture_output=True,
                        text=True, env=full, timeout=120, cwd=REPO)


def test_script_syntax_and_bad_arguments():
  subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
  bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
  assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr
  empty = subprocess.run(["bash", str(SCRIPT), "--bundle"], capture_output=True, text=True)
  assert empty.returncode == 2 and "--bundle needs a folder" in empty.stderr


def test_run_dry_run_lists_every_step_and_writes_nothing(tmp_path):
  out, work = tmp_path / "out", tmp_path / "work"
  proc = _dry_run("--from", str(tmp_path / "bundle"), OUT=str(out), GPU_CHECK_WORK=str(work),
                  GOLDEN_DIR="/some/goldens", TORCH_REF="/some/ref")
  assert proc.returncode == 0, proc.stderr
  text = proc.stdout
  lines = {ln.split("]")[0][1:]: ln for ln in text.splitlines() if ln.startswith("[")}
  assert "[plan] 480 s in all" in text
  assert "--no-index" in lines["install"] and "mne-" in lines["install"]
  assert "-m launch.parity --golden_dir=/some/goldens" in lines["parity"]
  assert "-m launch.gpu_bf16_deviation --golden_dir=/some/goldens" in lines["bf16_deviation"]
  for stage, parts in (("stage2", "train2,forward2"), ("stage1", "train1,forward1")):
    for side in ("jax", "torch"):
      line = lines[f"bench_{stage}_{side}"]
      assert "-m launch.bench" in line and "paper" in line and f"--parts={parts}" in line
      assert f"--side={side}" in line and "--torch_ref=/some/ref" in line
      assert f"--json_out={work}/bench_{stage}_{side}.json" in line
  for side in ("torch", "jax"):
    line = lines[f"memory_{side}"]
    assert "-m launch.gpu_memory --config=neuript_jax/configs/pretrain.py:paper" in line
    assert f"--side={side}" in line and "--batches=1,2,4" in line
  assert "--torch_ref=/some/ref" in lines["memory_torch"]
  ft = [ln for name, ln in lines.items() if name.startswith("finetune_eegmat")]
  assert len(ft) == 1 and "-m launch.finetune" in ft[0] and "mental_arithmetic" in ft[0]
  assert f"{tmp_path}/bundle/eegmat" in ft[0]
  assert "-m launch.gpu_report" in lines["report"]
  assert not out.exists() and not work.exists()


def test_bundle_dry_run_lists_the_parts_and_downloads_nothing(tmp_path):
  bundle = tmp_path / "b"
  proc = _dry_run("--bundle", str(bundle), GOLDEN_DIR="/g", TORCH_REF="/r", EEGMAT_RAW="/raw")
  assert proc.returncode == 0, proc.stderr
  text = proc.stdout
  assert "at most 64 MiB" in text
  wheels = next(ln for ln in text.splitlines() if ln.startswith("[wheels]"))
  for spec in ("ml-collections==", "grain==", "array-record==", "mne==", "tensorboardX==",
               "edfio=="):
    assert spec in wheels
  assert "--python-version 3.12" in wheels and "--no-deps" in wheels
  assert "manylinux2014_x86_64" in wheels and "--only-binary=:all:" in wheels
  assert "cp /g/*.npz" in text and "/r/{cross_models,utils,LICENSE}" in text
  assert "--input=/raw --recipe=mental_arithmetic" in text
  assert "gpu_shard_pack pack" in text and "fails if over 64 MiB" in text
  assert not bundle.exists()


def _write_shards(root, n_per_shard=(3, 2)):
  from data_prep import shards
  from neuript_jax.data import record
  rng = np.random.default_rng(0)
  recs = []
  for k, n in enumerate(n_per_shard):
    rows = [record.Record(signal=rng.normal(0, 40, (2, 16)).astype(np.float32),
                          channel_names=("Fp1-F7", "F7-T3"),
                          positions=rng.normal(0, 0.05, (2, 3)), sampling_rate=64.0,
                          dataset="X", subject=f"s{k}", session="", recording=f"r{k}",
                          window_start=16 * i, window_start_s=0.25 * i, label=i % 2,
                          split="train") for i in range(n)]
    shards.write_shard(root / "train" / f"r{k}.array_record", rows)
    recs.append(rows)
  (root / "manifest.json").write_text('{"windows": 5}\n')
  (root / ".state").mkdir()
  (root / ".state" / "journal").write_text("not carried")
  return recs


def test_shard_pack_round_trip_rounds_only_the_signal(tmp_path):
  from launch import gpu_shard_pack
  from neuript_jax.data import record
  src, dst = tmp_path / "src", tmp_path / "dst"
  recs = _write_shards(src)
  summary = gpu_shard_pack.pack(str(src), str(tmp_path / "p.npz"))
  assert summary["records"] == 5 and summary["shards"] == 2
  assert 0 < summary["max_abs_err_uV"] < 2.0 ** -10 * summary["max_abs_signal_uV"]
  gpu_shard_pack.unpack(str(tmp_path / "p.npz"), str(dst))
  assert (dst / "manifest.json").read_bytes() == (src / "manifest.json").read_bytes()
  assert not (dst / ".state").exists()
  assert json.loads((dst / gpu_shard_pack.NOTE).read_text())["signal_dtype"] == "float16"
  for k, rows in enumerate(recs):
    reader = record.ShardReader([dst / "train" / f"r{k}.array_record"])
    assert len(reader) == len(rows)
    for i, want in enumerate(rows):
      got = reader[i]
      assert (got.subject, got.window_start, got.label) == (want.subject, want.window_start,
                                                            want.label)
      np.testing.assert_array_equal(got.positions, want.positions)
      np.testing.assert_array_equal(got.signal, want.signal.astype(np.float16))
      assert not np.array_equal(got.signal, want.signal)


def test_shard_pack_errors_name_the_folder(tmp_path):
  from launch import gpu_shard_pack
  with pytest.raises(FileNotFoundError, match="no manifest.json"):
    gpu_shard_pack.pack(str(tmp_path), str(tmp_path / "p.npz"))
  (tmp_path / "manifest.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="no .array_record files"):
    gpu_shard_pack.pack(str(tmp_path), str(tmp_path / "p.npz"))


def test_memory_search_measures_the_batches_then_brackets_the_largest():
  from launch import gpu_memory
  gib = gpu_memory.GIB
  seen, written = [], []

  def evaluate(b):           # 3 GiB resident + 10 GiB per sample; b >= 9 runs out of memory
    seen.append(b)
    if b >= 9:
      return {"batch": b, "ok": False, "error": "RESOURCE_EXHAUSTED"}
    return {"batch": b, "ok": True, "peak_bytes": (3 + 10 * b) * gib, "limit_bytes": 90 * gib}

  res = gpu_memory.search("jax", [1, 2, 4], None, 8, 1e9, evaluate, written.append)
  assert seen[:3] == [1, 2, 4]
  assert res["capacity_bytes"] == 90 * gib
  assert res["largest"]["batch"] == 8 and res["largest"]["exact"]
  assert len(res["rows"]) == len(seen) <= 8 and written[-1] is res
  # --capacity_gib wins; the failures above it (counted as over) still bracket 8.
  out = gpu_memory.search("jax", [1, 2], 1000.0, 20, 1e9, evaluate)
  assert out["capacity_bytes"] == 1000 * gib
  assert out["largest"]["batch"] == 8 and out["largest"]["exact"]
  table = gpu_memory.format_table(out)
  assert "largest fitting batch at 1000.0 GiB: 8 (exact" in table and "failed" in table


def test_memory_search_stops_at_the_time_budget():
  from launch import gpu_memory
  res = gpu_memory.search("jax", [1, 2], None, 6, -1.0, lambda b: {})
  assert res["rows"] == [] and res["largest"] is None and "time budget" in res["note"]


def test_config_args_keeps_only_config_flags():
  from launch import gpu_memory
  argv = ["--side=jax", "--config=a.py:tiny", "--config.model.T", "64",
          "--config.seed=3", "--batches=1,2"]
  assert gpu_memory.config_args(argv) == ["--config=a.py:tiny", "--config.model.T", "64",
                                          "--config.seed=3"]


def test_report_tables(tmp_path):
  from launch import gpu_report
  bench_jax = {"batch": 4, "steps": 5, "dtype": "bfloat16", "attention": "auto",
               "remat": "block", "device_kind": "NVIDIA H200", "parts": ["train1", "forward1"],
               "jax_stage1_train_step_s": 0.5, "stage1_samples_per_s": 8.0,
               "stage1_mfu": 0.25, "jax_stage1_forward_s": 0.1, "compile_s": {"train1": 30.0},
               "peak_memory_bytes": 40 * 2 ** 30, "peak_flops": 9.89e14, "jax_version": "x"}
  bench_torch = {"batch": 4, "parts": ["train1", "forward1"], "torch_stage1_train_step_s": 1.0,
                 "torch_stage1_forward_s": 0.2, "torch_version": "y"}
  mem = {"side": "jax", "capacity_bytes": 139 * 2 ** 30,
         "rows": [{"batch": 1, "ok": True, "peak_bytes": 2 ** 31},
                  {"batch": 16, "ok": False, "error": "OOM"}],
         "largest": {"batch": 8, "exact": True, "predicted": 9, "evaluations": 3}}
  lines = [{"step": "bench_stage1_jax", "result": bench_jax},
           {"step": "bench_stage1_torch", "result": bench_torch},
           {"step": "memory_jax", "result": mem},
           {"step": "finetune_eegmat_cpu", "result": {"test": {"auroc": 0.8, "n": 192}}}]
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(x) + "\n" for x in lines))
  (tmp_path / "summary.txt").write_text("   [parity] exit 0 after 12 s\n")
  text = gpu_report.report(str(path))
  assert "[parity] exit 0" in text
  row = next(ln for ln in text.splitlines() if ln.startswith("| stage-1 train step"))
  cells = [c.strip() for c in row.split("|")[1:-1]]
  assert cells[1:7] == ["0.5000", "1.0000", "0.500", "8.0", "4.0", "25.0%"]
  assert cells[8] == "40.00"
  assert "| 1 | 2.00 | - |" in text and "failed: OOM" in text
  assert "Largest batch that fits, ours: 8 at 139.0 GiB" in text
  assert "test: auroc 0.8000, n 192.0000" in text
