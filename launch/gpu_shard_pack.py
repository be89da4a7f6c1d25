r"""Pack data_prep shards into one file with float16 signals, and unpack them again.

  python -m launch.gpu_shard_pack pack SHARD_DIR PACK.npz
  python -m launch.gpu_shard_pack unpack PACK.npz SHARD_DIR

For carrying a converted data set where bytes are scarce (launch/gpu_check.sh --bundle: the
device machine takes 64 MiB in all). Every record keeps its header and positions byte for
byte; only `signal` (µV) is rounded to float16 and widened back to float32 on unpack, so the
unpacked shards have the same schema, record order, names and manifest as the source. The
rounding is reported (max and mean |error| in µV) at pack time, stored in the pack, and
written to SHARD_DIR/gpu_shard_pack.json on unpack. Files other than shards (manifest.json,
...) are carried verbatim; the resume journal `.state/` is left out.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

from neuript_jax.data import record

_STATE = ".state"
NOTE = "gpu_shard_pack.json"


def _shard_paths(root: Path) -> list[Path]:
  return sorted(p for p in root.rglob(f"*{record.SHARD_SUFFIX}")
                if _STATE not in p.relative_to(root).parts)


def _split_record(data: bytes, where: str) -> tuple[bytes, np.ndarray, bytes]:
  """(magic + length + header, float32 signal, positions bytes) of one encoded record."""
  if data[:4] != record.MAGIC:
    raise ValueError(f"{where}: not a NeurIPT window record (bad magic)")
  (hlen,) = struct.unpack_from("<I", data, 4)
  meta = json.loads(bytes(data[8:8 + hlen]))
  c, t = meta["signal_shape"]
  head_end = 8 + hlen
  sig_end = head_end + 4 * c * t
  if len(data) != sig_end + 4 * c * 3:
    raise ValueError(f"{where}: record has {len(data)} bytes, expected {sig_end + 12 * c}")
  return data[:head_end], np.frombuffer(data, "<f4", c * t, head_end), data[sig_end:]


def pack(src: str, out: str) -> dict:
  """Pack every shard under `src` into `out` (.npz); returns the rounding summary."""
  root = Path(src)
  if not (root / "manifest.json").is_file():
    raise FileNotFoundError(f"{root}: no manifest.json (not a data_prep output folder)")
  shards = _shard_paths(root)
  if not shards:
    raise FileNotFoundError(f"{root}: no {record.SHARD_SUFFIX} files")
  heads, sigs, tails, counts = [], [], [], []
  for path in shards:
    reader = record.ShardReader([path])
    for i in range(len(reader)):
      head, sig, tail = _split_record(reader.read_bytes(i), f"{path} record {i}")
      heads.append(head)
      sigs.append(sig)
      tails.append(tail)
    counts.append(len(reader))
    reader.close()
  signal = np.concatenate(sigs)
  if np.abs(signal).max() >= 65504.0:
    raise ValueError(f"{root}: a signal value exceeds float16's range (|x| >= 65504 µV)")
  half = signal.astype(np.float16)
  err = np.abs(half.astype(np.float32) - signal)
  summary = {"source": str(root), "records": len(heads), "shards": len(shards),
             "signal_dtype": "float16", "max_abs_err_uV": float(err.max()),
             "mean_abs_err_uV": float(err.mean()),
             "max_abs_signal_uV": float(np.abs(signal).max())}
  others = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != record.SHARD_SUFFIX
            and _STATE not in p.relative_to(root).parts}
  index = {"shards": [[str(p.relative_to(root)), n] for p, n in zip(shards, counts)],
           "others": list(others), "summary": summary}
  np.savez_compressed(
      out, index=np.frombuffer(json.dumps(index).encode(), np.uint8),
      heads=np.frombuffer(b"".join(heads), np.uint8),
      head_lens=np.array([len(h) for h in heads], np.int64),
      tails=np.frombuffer(b"".join(tails), np.uint8),
      tail_lens=np.array([len(t) for t in tails], np.int64),
      sig_lens=np.array([len(s) for s in sigs], np.int64), signal=half,
      **{f"other_{k}": np.frombuffer(v, np.uint8) for k, v in enumerate(others.values())})
  return summary


def unpack(pack_path: str, dst: str) -> dict:
  """Write the shards of `pack_path` under `dst`; returns the stored rounding summary."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  z = np.load(pack_path)
  index = json.loads(z["index"].tobytes())
  root = Path(dst)
  root.mkdir(parents=True, exist_ok=True)
  for k, rel in enumerate(index["others"]):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(z[f"other_{k}"].tobytes())
  heads, tails = z["heads"].tobytes(), z["tails"].tobytes()
  h_off = np.concatenate([[0], np.cumsum(z["head_lens"])])
  t_off = np.concatenate([[0], np.cumsum(z["tail_lens"])])
  s_off = np.concatenate([[0], np.cumsum(z["sig_lens"])])
  signal = z["signal"].astype("<f4")
  r = 0
  for rel, n in index["shards"]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    writer = array_record_module.ArrayRecordWriter(str(tmp), record.WRITER_OPTIONS)
    try:
      for _ in range(n):
        writer.write(heads[h_off[r]:h_off[r + 1]] + signal[s_off[r]:s_off[r + 1]].tobytes()
                     + tails[t_off[r]:t_off[r + 1]])
        r += 1
    finally:
      writer.close()
    os.replace(tmp, path)
  summary = dict(index["summary"], unpacked_to=str(root))
  (root / NOTE).write_text(json.dumps(summary, indent=1) + "\n")
  return summary


def main(argv: list[str]) -> int:
  if len(argv) != 4 or argv[1] not in ("pack", "unpack"):
    print(__doc__.split("\n\n")[0], file=sys.stderr)
    return 2
  fn = pack if argv[1] == "pack" else unpack
  try:
    summary = fn(argv[2], argv[3])
  except (FileNotFoundError, ValueError) as e:
    print(f"gpu_shard_pack: {e}", file=sys.stderr)
    return 1
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
