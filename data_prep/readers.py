"""Open any EEG recording through MNE, choosing the reader from the file itself.

``open_raw(path)`` sniffs the format from the extension *and* the leading bytes (a text file
renamed ``.edf`` is refused before MNE sees it), checks what can be checked cheaply without
reading samples (an EDF/BDF whose size is smaller than its header promises is truncated), and
returns an MNE Raw with data not yet loaded. Every failure is a ``Rejected`` with a reason a
person understands. MNE returns volts; ``MICROVOLTS_PER_VOLT`` converts (the pipeline reads
only the channels it needs, then scales).

Supported: EDF/EDF+ (``.edf``), BDF (``.bdf``), FIF (``.fif``, ``.fif.gz``), BrainVision
(``.vhdr``), EEGLAB (``.set``), Neuroscan (``.cnt``), GDF (``.gdf``).

BIDS: a data file named like ``sub-01[_ses-x]_task-y_eeg.<ext>`` below a folder holding
``dataset_description.json`` is read with MNE-BIDS (``read_raw_bids``), so the sidecars apply:
channel types and bad channels from ``channels.tsv``, digitised positions from
``electrodes.tsv`` (``--positions=recording``), line frequency. If MNE-BIDS cannot read the
sidecars, the file is read as a plain recording (and a warning is logged).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from absl import logging

from data_prep.recipes.base import Rejected

MICROVOLTS_PER_VOLT = 1e6


def sniff_format(path: Path) -> str:
  """Format name from extension + magic bytes; raises Rejected for anything else."""
  name = path.name.lower()
  try:
    size = path.stat().st_size
  except OSError as e:
    raise Rejected(f"cannot open file: {e.strerror or e}") from e
  if size == 0:
    raise Rejected("empty file (0 bytes)")
  with open(path, "rb") as f:
    head = f.read(64)
  ext = ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()
  if ext == ".edf":
    if head[:8] != b"0       ":
      raise Rejected("not an EDF file: its first 8 bytes are not the EDF version field "
                     f"'0       ' (got {head[:8]!r})")
    return "edf"
  if ext == ".bdf":
    if head[:8] != b"\xffBIOSEMI":
      raise Rejected(f"not a BDF file: bad magic bytes {head[:8]!r}")
    return "bdf"
  if ext == ".gdf":
    if not head.startswith(b"GDF"):
      raise Rejected(f"not a GDF file: bad magic bytes {head[:8]!r}")
    return "gdf"
  if ext in (".fif", ".fif.gz"):
    if ext == ".fif" and head[:4] != b"\x00\x00\x00\x64":
      raise Rejected("not a FIF file: it does not start with a FIFF file-id tag")
    return "fif"
  if ext == ".vhdr":
    if b"Brain Vision" not in head and b"BrainVision" not in head:
      raise Rejected("not a BrainVision header: first line is not a BrainVision header line")
    return "brainvision"
  if ext == ".set":
    if not (head.startswith(b"MATLAB") or head.startswith(b"\x89HDF")):
      raise Rejected("not an EEGLAB .set file: neither a MATLAB 5 nor a MATLAB 7.3 (HDF5) file")
    return "eeglab"
  if ext == ".cnt":
    return "cnt"
  raise Rejected(f"unsupported file type {ext or '(no extension)'!r}")


def check_edf_size(path: Path, fmt: str) -> None:
  """Reject an EDF/BDF whose byte count disagrees with its header (truncated or corrupt)."""
  size = path.stat().st_size
  with open(path, "rb") as f:
    header = f.read(256)
    if len(header) < 256:
      raise Rejected(f"truncated {fmt.upper()} header ({len(header)} of 256 bytes)")
    try:
      header_bytes = int(header[184:192].decode("ascii").strip())
      n_records = int(header[236:244].decode("ascii").strip())
      n_signals = int(header[252:256].decode("ascii").strip())
    except ValueError as e:
      raise Rejected(f"corrupt {fmt.upper()} header: {e}") from e
    if n_signals <= 0 or header_bytes != 256 * (n_signals + 1):
      raise Rejected(f"corrupt {fmt.upper()} header: {n_signals} signals but "
                     f"{header_bytes} header bytes")
    f.seek(256 + 216 * n_signals)
    field = f.read(8 * n_signals)
  if len(field) < 8 * n_signals:
    raise Rejected(f"truncated {fmt.upper()} header")
  try:
    samples = [int(field[i * 8:(i + 1) * 8].decode("ascii").strip()) for i in range(n_signals)]
  except ValueError as e:
    raise Rejected(f"corrupt {fmt.upper()} header (samples per record): {e}") from e
  bytes_per_sample = 3 if fmt == "bdf" else 2
  record_bytes = sum(samples) * bytes_per_sample
  data_bytes = size - header_bytes
  if n_records == 0 or record_bytes == 0 or data_bytes < record_bytes:
    raise Rejected("zero-length recording: no complete data record")
  if n_records > 0 and data_bytes < n_records * record_bytes:
    raise Rejected(f"truncated {fmt.upper()}: header promises {n_records} data records "
                   f"({header_bytes + n_records * record_bytes} bytes) but the file has "
                   f"{size} bytes")


_BIDS_NAME = re.compile(r"^sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*_(eeg|ieeg|meg)$")


def bids_entities(path: str | os.PathLike) -> dict[str, str]:
  """BIDS key-value entities of a file name (``sub``, ``ses``, ``task``, ``run``...); {} if none."""
  stem = Path(path).name.split(".")[0]
  if not _BIDS_NAME.match(stem):
    return {}
  return dict(part.split("-", 1) for part in stem.split("_")[:-1])


def bids_root(path: str | os.PathLike) -> Path | None:
  """The BIDS dataset folder above a BIDS-named data file, or None."""
  path = Path(path)
  if not bids_entities(path):
    return None
  for parent in path.parents:
    if (parent / "dataset_description.json").is_file():
      return parent
  return None


def _read_bids(path: Path, root: Path):
  import mne_bids  # pylint: disable=g-import-not-at-top
  bids_path = mne_bids.get_bids_path_from_fname(path)
  bids_path.root = root
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return mne_bids.read_raw_bids(bids_path, verbose="error")


def open_raw(path: str | os.PathLike):
  """MNE Raw (preload=False) for a recording; raises Rejected with a readable reason."""
  import mne  # Lazy import: MNE is heavy.

  path = Path(path)
  fmt = sniff_format(path)
  if fmt in ("edf", "bdf"):
    check_edf_size(path, fmt)
  readers = {
      "edf": lambda p: mne.io.read_raw_edf(p, preload=False, verbose="error"),
      "bdf": lambda p: mne.io.read_raw_bdf(p, preload=False, verbose="error"),
      "gdf": lambda p: mne.io.read_raw_gdf(p, preload=False, verbose="error"),
      "fif": lambda p: mne.io.read_raw_fif(p, preload=False, verbose="error"),
      "brainvision": lambda p: mne.io.read_raw_brainvision(p, preload=False, verbose="error"),
      "eeglab": lambda p: mne.io.read_raw_eeglab(p, preload=False, verbose="error"),
      "cnt": lambda p: mne.io.read_raw_cnt(p, preload=False, verbose="error"),
  }
  root = bids_root(path)
  if root is not None:
    try:
      raw = _read_bids(path, root)
      if raw.n_times == 0:
        raise Rejected("zero-length recording (no samples)")
      return raw
    except Rejected:
      raise
    except Exception as e:  # pylint: disable=broad-except  # Sidecar trouble: plain read.
      logging.warning("MNE-BIDS could not read %s (%s: %s); reading it without sidecars",
                      path, type(e).__name__, e)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      raw = readers[fmt](path)
  except Exception as e:  # MNE raises many types for bad files; all mean "unreadable".
    raise Rejected(f"unreadable {fmt.upper()} file ({type(e).__name__}: {e})") from e
  if raw.n_times == 0:
    raise Rejected("zero-length recording (no samples)")
  return raw
