"""The window record schema: encode/decode, shards, random access, manifest-driven reading."""

import json

import numpy as np
import pytest

from data_prep import shards
from neuript_jax.data import record as rec


def _record(i=0, c=3, t=8):
  rng = np.random.default_rng(i)
  return rec.Record(
      signal=rng.standard_normal((c, t)).astype(np.float32) * 20,
      channel_names=tuple(f"ch{k}" for k in range(c)), positions=rng.standard_normal((c, 3)) * 0.05,
      sampling_rate=64.0, dataset="D", subject=f"s{i}", session="1", recording=f"r/{i}",
      window_start=256 * i, window_start_s=4.0 * i, label=i % 2, label_name=["a", "b"][i % 2],
      split="train", recipe_hash="abc")


def test_roundtrip_keeps_every_field():
  r = _record(3)
  back = rec.decode(rec.encode(r))
  np.testing.assert_array_equal(back.signal, r.signal)
  np.testing.assert_array_equal(back.positions, r.positions)
  assert back.signal.dtype == np.float32 and back.positions.dtype == np.float32
  for f in ("channel_names", "sampling_rate", "dataset", "subject", "session", "recording",
            "window_start", "window_start_s", "label", "label_name", "split", "recipe_hash",
            "version"):
    assert getattr(back, f) == getattr(r, f), f
  assert back.version == rec.SCHEMA_VERSION


def test_encoding_is_deterministic_and_compact():
  r = _record(1, c=20, t=256)
  data = rec.encode(r)
  assert data == rec.encode(rec.decode(data))
  assert len(data) < 20 * 256 * 4 + 20 * 3 * 4 + 700  # arrays + a small header


def test_unlabelled_record_defaults():
  r = rec.Record(signal=np.zeros((1, 4)), channel_names=("Cz",), positions=np.zeros((1, 3)),
                 sampling_rate=64, dataset="D", subject="s", session="", recording="r",
                 window_start=0, window_start_s=0.0)
  back = rec.decode(rec.encode(r))
  assert back.label == -1 and back.label_name is None


@pytest.mark.parametrize("mutate", ["magic", "truncate", "version"])
def test_decode_rejects_bad_bytes(mutate):
  data = bytearray(rec.encode(_record()))
  if mutate == "magic":
    data[:4] = b"XXXX"
  elif mutate == "truncate":
    data = data[:-5]
  else:
    hlen = int.from_bytes(data[4:8], "little")
    meta = json.loads(bytes(data[8:8 + hlen]))
    meta["version"] = rec.SCHEMA_VERSION + 1
    header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    data = data[:4] + len(header).to_bytes(4, "little") + header + data[8 + hlen:]
  with pytest.raises(ValueError):
    rec.decode(bytes(data))


def test_shape_validation():
  with pytest.raises(ValueError):
    rec.Record(signal=np.zeros((2, 4)), channel_names=("Cz",), positions=np.zeros((1, 3)),
               sampling_rate=64, dataset="D", subject="s", session="", recording="r",
               window_start=0, window_start_s=0.0)


def test_shards_random_access_and_read_split(tmp_path):
  recs = [_record(i) for i in range(7)]
  shards.write_shard(tmp_path / "train" / "a.array_record", recs[:3])
  shards.write_shard(tmp_path / "train" / "b.array_record", recs[3:])
  assert not list((tmp_path / "train").glob(".*"))  # no temporary left behind
  reader = rec.read_split(tmp_path, "train")  # no manifest: sorted folder listing
  assert len(reader) == 7
  for i in (6, 0, 3, 2, 5):
    np.testing.assert_array_equal(reader[i].signal, recs[i].signal)
    assert reader[i].subject == f"s{i}"
  assert [r.subject for r in reader] == [f"s{i}" for i in range(7)]
  with pytest.raises(IndexError):
    reader[7]
  reader.close()
  # The manifest's shard list is authoritative: a stray file is not read.
  (tmp_path / "manifest.json").write_text(json.dumps({"shards": {"train": ["train/b.array_record"]}}))
  with rec.read_split(tmp_path, "train") as only_b:
    assert len(only_b) == 4 and only_b[0].subject == "s3"


def test_shard_options_are_random_access(tmp_path):
  from array_record.python import array_record_module
  shards.write_shard(tmp_path / "x.array_record", [_record(0)])
  reader = array_record_module.ArrayRecordReader(str(tmp_path / "x.array_record"))
  assert "group_size:1," in reader.writer_options_string() + ","


def test_grain_array_record_data_source_reads_the_shards(tmp_path):
  grain = pytest.importorskip("grain.python")
  recs = [_record(i) for i in range(5)]
  shards.write_shard(tmp_path / "val" / "a.array_record", recs[:2])
  shards.write_shard(tmp_path / "val" / "b.array_record", recs[2:])
  source = grain.ArrayRecordDataSource([str(p) for p in rec.split_shards(tmp_path, "val")])
  assert len(source) == 5
  assert [rec.decode(source[i]).subject for i in (4, 0, 2)] == ["s4", "s0", "s2"]


def test_reader_bounds_open_files_and_pickles(tmp_path):
  import pickle
  recs = [_record(i) for i in range(6)]
  for k in range(3):
    shards.write_shard(tmp_path / "train" / f"{k}.array_record", recs[2 * k:2 * k + 2])
  reader = rec.ShardReader(sorted((tmp_path / "train").glob("*.array_record")), max_open=2)
  assert [reader[i].subject for i in (0, 5, 2, 4, 1, 3)] == ["s0", "s5", "s2", "s4", "s1", "s3"]
  assert len(reader._open) <= 2
  clone = pickle.loads(pickle.dumps(reader))
  assert len(clone) == 6 and clone[5].subject == "s5"
  sized = rec.ShardReader(reader.paths, sizes=[2, 2, 2])
  assert len(sized._open) == 0 and sized[3].subject == "s3"
