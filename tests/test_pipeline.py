"""The grain input pipeline (neuript_jax.data.pipeline) on tiny shard directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from data_prep import shards as shards_lib
from neuript_jax import signal as signal_lib
from neuript_jax.data import pipeline
from neuript_jax.data import record as rec

REPO = Path(__file__).resolve().parents[1]


def _write_source(root: Path, name: str, counts: dict[str, list[int]], *, c: int = 3,
                  t: int = 16, rate: float = 64.0, seed: int = 0) -> Path:
  """A data_prep-like output dir: shards per split (one per entry of counts[split]) and a
  manifest with the fields the pipeline reads. Signals are random µV with a wide range."""
  out = root / name
  rng = np.random.default_rng(seed)
  channels = [f"ch{k}" for k in range(c)]
  shard_lists, files, split_counts = {}, [], {}
  for split, sizes in counts.items():
    for j, n in enumerate(sizes):
      rel = f"{split}/{name}_{j}.array_record"
      records = [rec.Record(
          signal=rng.standard_normal((c, t)).astype(np.float32) * 30.0,
          channel_names=channels, positions=rng.standard_normal((c, 3)) * 0.05,
          sampling_rate=rate, dataset=name, subject=f"s{j}", session="", recording=f"r{j}",
          window_start=t * i, window_start_s=t * i / rate, label=i % 3, label_name=None,
          split=split, recipe_hash="h" + name) for i in range(n)]
      shards_lib.write_shard(out / rel, records)
      shard_lists.setdefault(split, []).append(rel)
      files.append({"path": f"in/{name}_{split}_{j}.edf", "shard": rel, "split": split,
                    "windows": n})
      split_counts[split] = split_counts.get(split, 0) + n
  manifest = {"schema_version": 1, "recipe": {"name": "test", "hash": "h" + name, "config": {}},
              "dataset": name, "sampling_rate": rate, "window_samples": t,
              "channels": channels, "positions": None, "windows": sum(split_counts.values()),
              "counts": {"split": split_counts}, "shards": shard_lists, "files": files}
  (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
  return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  return {
      "a": _write_source(root, "a", {"train": [7, 5], "val": [3]}, seed=1),  # 12 train
      "b": _write_source(root, "b", {"train": [4]}, seed=2),
      "c5": _write_source(root, "c5", {"train": [4]}, c=5, seed=3),  # other channel count
      "t32": _write_source(root, "t32", {"train": [4]}, t=32, seed=4),  # longer windows
      "empty": _write_source(root, "empty", {"train": [4], "test": [0]}, seed=5),
  }


def _cfg(paths, weights=None, **kw):
  cfg = pipeline.default_data_config()
  weights = weights or [1.0] * len(paths)
  cfg.sources = [{"path": str(p), "weight": w} for p, w in zip(paths, weights)]
  cfg.read_threads = 2
  for k, v in kw.items():
    setattr(cfg, k, v)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _records(paths, split="train"):
  """Global record id -> Record, over the sources in order (the pipeline's id scheme)."""
  out = []
  for p in paths:
    with rec.read_split(p, split) as reader:
      out.extend(reader)
  return out


def test_batch_layout_dtypes_and_alaw(dirs):
  cfg = _cfg([dirs["a"]], global_batch_size=4)
  it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  records = _records([dirs["a"]])
  for batch in _take(it, 4):  # past the first epoch (12 records)
    assert set(batch) == {"x", "positions", "label", "index", "valid"}
    assert batch["valid"].all()
    assert batch["x"].shape == (4, 16, 3) and batch["x"].dtype == np.float32
    assert batch["positions"].shape == (4, 3, 3) and batch["positions"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["index"].shape == (4,) and batch["index"].dtype == np.int64
    for row, idx in enumerate(batch["index"]):
      r = records[idx]
      want = signal_lib.a_law_compress(r.signal, a=0.25).T  # time first
      np.testing.assert_array_equal(batch["x"][row], want)
      np.testing.assert_array_equal(batch["positions"][row], r.positions)
      assert batch["label"][row] == r.label
  assert np.abs(batch["x"]).max() < 5  # companded, not µV (signals reach ~100 µV)
  it.close()
  # alaw=False gives µV; window_len crops to the first samples.
  cfg = _cfg([dirs["a"]], global_batch_size=4, alaw=False, window_len=10)
  batch = next(pipeline.make_iterator(cfg, process_index=0, process_count=1))
  assert batch["x"].shape == (4, 10, 3)
  for row, idx in enumerate(batch["index"]):
    np.testing.assert_array_equal(batch["x"][row], records[idx].signal[:, :10].T)


def test_seed_determinism_and_shuffle(dirs):
  def order(seed, shuffle=True):
    cfg = _cfg([dirs["a"]], global_batch_size=4, seed=seed, shuffle=shuffle)
    it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
    return np.concatenate([b["index"] for b in _take(it, 6)])

  a0, a0_again, a1 = order(0), order(0), order(1)
  np.testing.assert_array_equal(a0, a0_again)
  assert not np.array_equal(a0, a1)
  assert not np.array_equal(a0[:12], np.arange(12))  # shuffled
  assert not np.array_equal(a0[:12], a0[12:])  # each epoch reshuffled
  np.testing.assert_array_equal(order(0, shuffle=False), np.tile(np.arange(12), 2))


def test_every_record_once_per_epoch(dirs):
  # drop_remainder=False: 12 records in batches of 5 -> 5, 5, 2 + 3 padding rows, then the end.
  cfg = _cfg([dirs["a"]], global_batch_size=5, num_epochs=1, drop_remainder=False)
  it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  batches = list(it)
  assert [len(b["index"]) for b in batches] == [5, 5, 5] and it.num_batches == 3
  assert [int(b["valid"].sum()) for b in batches] == [5, 5, 2]
  assert batches[-1]["index"][2:].tolist() == [-1, -1, -1]
  valid = np.concatenate([b["index"][b["valid"]] for b in batches])
  assert sorted(valid.tolist()) == list(range(12))
  # drop_remainder=True, two epochs of a divisible batch size: each epoch a permutation.
  cfg = _cfg([dirs["a"]], global_batch_size=4, num_epochs=2)
  batches = list(pipeline.make_iterator(cfg, process_index=0, process_count=1))
  ids = np.concatenate([b["index"] for b in batches])
  assert len(batches) == 6
  assert sorted(ids[:12].tolist()) == sorted(ids[12:].tolist()) == list(range(12))
  # drop_remainder=True drops the last short batch.
  cfg = _cfg([dirs["a"]], global_batch_size=5, num_epochs=1)
  assert len(list(pipeline.make_iterator(cfg, process_index=0, process_count=1))) == 2


def test_per_host_slices_partition_the_global_batch(dirs):
  """Host p's g-th batch = rows [p*L, (p+1)*L) of the single-host g-th global batch."""
  kw = dict(global_batch_size=4, seed=3)
  single = _take(pipeline.make_iterator(_cfg([dirs["a"], dirs["b"]], **kw), process_index=0,
                                        process_count=1), 7)
  hosts = [_take(pipeline.make_iterator(_cfg([dirs["a"], dirs["b"]], **kw), process_index=p,
                                        process_count=2), 7) for p in range(2)]
  for g in range(7):
    h0, h1 = hosts[0][g], hosts[1][g]
    assert h0["x"].shape == (2, 16, 3)
    assert not set(h0["index"].tolist()) & set(h1["index"].tolist())
    for key in single[g]:
      np.testing.assert_array_equal(np.concatenate([h0[key], h1[key]]), single[g][key])
  # Finite: both hosts yield the same number of batches.
  cfg = _cfg([dirs["a"]], global_batch_size=4, num_epochs=1)
  lens = [len(list(pipeline.make_iterator(cfg, process_index=p, process_count=2)))
          for p in range(2)]
  assert lens == [3, 3]
  # Evaluation (drop_remainder=False) on 2 hosts: 12 records, global batch 8 -> the second
  # global batch holds 4 records + 4 padding rows; both hosts yield 2 batches of 4 rows, and
  # their valid rows together are every record once, in the single-host order.
  cfg = _cfg([dirs["a"]], global_batch_size=8, num_epochs=1, drop_remainder=False,
             shuffle=False)
  per_host = [list(pipeline.make_iterator(cfg, process_index=p, process_count=2))
              for p in range(2)]
  assert [len(h) for h in per_host] == [2, 2]
  assert all(b["x"].shape[0] == 4 for h in per_host for b in h)
  order = np.concatenate([np.concatenate([h[g]["index"][h[g]["valid"]] for h in per_host])
                          for g in range(2)])
  assert order.tolist() == list(range(12))
  assert not per_host[1][1]["valid"].any()
  with pytest.raises(ValueError, match="multiple of process_count"):
    pipeline.make_iterator(_cfg([dirs["a"]], global_batch_size=3), process_index=0,
                           process_count=2)


def test_mixture_weights(dirs):
  cfg = _cfg([dirs["a"], dirs["b"]], weights=[3.0, 1.0], global_batch_size=8)
  it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  ids = np.concatenate([b["index"] for b in _take(it, 40)])
  from_a = np.mean(ids < 12)  # source a holds ids 0..11, source b 12..15
  assert abs(from_a - 0.75) < 0.02, from_a
  assert set(ids[ids >= 12].tolist()) == {12, 13, 14, 15}
  summary = it.summary
  assert [s["offset"] for s in summary["sources"]] == [0, 12]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert set(a) == set(b)
    for key in a:
      assert a[key].dtype == b[key].dtype
      np.testing.assert_array_equal(a[key], b[key])


def _check_resume(cfg, before=None):
  """3 batches, save (JSON), 2 more; a fresh iterator of cfg and a fresh in-process one
  restored from the saved state both yield the same 2 (bit-identical)."""
  it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  first = _take(it, 3)
  if before is not None:
    _assert_same(first, before)
  saved = pipeline.iterator_state_to_json(it.get_state())
  assert isinstance(saved, str)
  expected = _take(it, 2)
  it.close()
  fresh = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  fresh.set_state(pipeline.iterator_state_from_json(saved))
  _assert_same(_take(fresh, 2), expected)
  fresh.close()
  # The state does not depend on the worker count.
  in_process = cfg.copy_and_resolve_references()
  in_process.worker_count = 0
  fresh = pipeline.make_iterator(in_process, process_index=0, process_count=1)
  fresh.set_state(pipeline.iterator_state_from_json(saved))
  _assert_same(_take(fresh, 2), expected)
  return expected


def test_state_save_restore_is_exact(dirs):
  cfg = _cfg([dirs["a"], dirs["b"]], weights=[3.0, 1.0], global_batch_size=4)
  expected = _check_resume(cfg)
  # The state is the same JSON on every host and holds only plain values.
  state = pipeline.make_iterator(cfg, process_index=1, process_count=2).get_state()
  assert json.loads(json.dumps(state)) == state and state["next_batch"] == 0
  # A pipeline with another global record order refuses the state.
  it = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  _take(it, 1)
  other = pipeline.make_iterator(_cfg([dirs["a"], dirs["b"]], weights=[3.0, 1.0],
                                      global_batch_size=4, seed=9),
                                 process_index=0, process_count=1)
  with pytest.raises(ValueError, match="seed"):
    other.set_state(it.get_state())
  assert expected[0]["x"].shape == (4, 16, 3)


def test_worker_processes_same_batches_and_resume(dirs):
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  kw = dict(weights=[3.0, 1.0], global_batch_size=4, seed=5)
  in_process = _take(pipeline.make_iterator(_cfg([dirs["a"], dirs["b"]], **kw),
                                            process_index=0, process_count=1), 5)
  # Worker processes yield the in-process batches and resume exactly: 3 taken, state saved,
  # 2 more; a fresh worker iterator restored from the state yields the same 2.
  with_workers = _check_resume(_cfg([dirs["a"], dirs["b"]], worker_count=2, **kw),
                               before=in_process[:3])
  for a, b in zip(in_process[3:], with_workers):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_to_global_batch_one_device(dirs):
  import jax
  from jax.sharding import PartitionSpec
  batch = next(pipeline.make_iterator(_cfg([dirs["a"]], global_batch_size=4),
                                      process_index=0, process_count=1))
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  out = pipeline.to_global_batch(batch, mesh)
  assert set(out) == set(batch)
  for key, value in out.items():
    assert isinstance(value, jax.Array) and value.shape == batch[key].shape
    assert value.sharding.spec == PartitionSpec(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(value), batch[key])
  assert out["x"].dtype == np.float32 and out["label"].dtype == np.int32
  # A mesh without an fsdp axis shards over "data" only.
  mesh1 = jax.make_mesh((1,), ("data",))
  assert pipeline.to_global_batch(batch, mesh1)["x"].sharding.spec == PartitionSpec(("data",))


def test_to_global_batch_eight_simulated_devices(dirs):
  script = textwrap.dedent(f"""
      import numpy as np, jax
      from neuript_jax.data import pipeline
      assert jax.device_count() == 8
      cfg = pipeline.default_data_config()
      cfg.sources = [{{"path": {str(dirs["a"])!r}, "weight": 1.0}}]
      cfg.global_batch_size = 8
      batch = next(pipeline.make_iterator(cfg))
      mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
      out = pipeline.to_global_batch(batch, mesh)
      x = out["x"]
      assert x.shape == (8, 16, 3), x.shape
      shards = x.addressable_shards
      assert len(shards) == 8 and all(s.data.shape == (1, 16, 3) for s in shards)
      rows = sorted(s.index[0].start for s in shards)
      assert rows == list(range(8)), rows
      np.testing.assert_array_equal(np.asarray(x), batch["x"])
      np.testing.assert_array_equal(np.asarray(out["index"]), batch["index"])
      print("OK")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=120)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_summary_and_clear_errors(dirs, tmp_path):
  summary = pipeline.dataset_summary(_cfg([dirs["a"], dirs["b"]]))
  assert summary["n_records"] == 16 and summary["channels"] == 3 and summary["window_len"] == 16
  a = summary["sources"][0]
  assert (a["n_records"], a["channels"], a["sampling_rate"], a["n_shards"]) == (12, 3, 64.0, 2)
  assert pipeline.dataset_summary(_cfg([dirs["a"]], split="val"))["n_records"] == 3

  def error(cfg):
    with pytest.raises(ValueError) as e:
      pipeline.make_iterator(cfg, process_index=0, process_count=1)
    with pytest.raises(ValueError):
      pipeline.dataset_summary(cfg)
    return str(e.value)

  missing = tmp_path / "nowhere"
  assert str(missing) in error(_cfg([missing]))
  no_manifest = tmp_path / "no_manifest"
  no_manifest.mkdir()
  assert "manifest.json" in error(_cfg([no_manifest]))
  msg = error(_cfg([dirs["a"]], split="test"))
  assert "'test'" in msg and str(dirs["a"] / "manifest.json") in msg
  msg = error(_cfg([dirs["a"], dirs["empty"]], split="test"))  # a has no test split at all
  assert str(dirs["a"]) in msg
  msg = error(_cfg([dirs["empty"]], split="test"))
  assert "zero records" in msg and str(dirs["empty"]) in msg
  msg = error(_cfg([dirs["a"], dirs["c5"]]))
  assert "channel count" in msg and str(dirs["a"]) in msg and str(dirs["c5"]) in msg
  msg = error(_cfg([dirs["a"], dirs["t32"]]))
  assert "samples per window" in msg and str(dirs["t32"]) in msg
  assert "no sources" in error(pipeline.default_data_config())
  # A common window_len reconciles different window lengths (crop), but not beyond the
  # shortest.
  batch = next(pipeline.make_iterator(_cfg([dirs["a"], dirs["t32"]], window_len=16,
                                           global_batch_size=4),
                                      process_index=0, process_count=1))
  assert batch["x"].shape == (4, 16, 3)
  assert "window_len=20" in error(_cfg([dirs["a"], dirs["t32"]], window_len=20))
  # A shard listed in the manifest but absent is named.
  broken = _write_source(tmp_path, "broken", {"train": [2, 2]})
  (broken / "train" / "broken_1.array_record").unlink()
  assert "broken_1.array_record" in error(_cfg([broken]))
