"""The synthetic EEG generator: realism checks, determinism, files, and the two recipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
from absl import logging

from data_prep import convert
from data_prep import synthetic
from data_prep.recipes import get_recipe
from neuript_jax.data.record import read_split

REPO = Path(__file__).resolve().parents[2]
SFREQ = 256.0

logging.set_verbosity(logging.ERROR)


@pytest.fixture(scope="module")
def raw():
  return synthetic.make_recording(1, 0, seed=3, duration_s=120.0, sfreq=SFREQ)


def band_power(x: np.ndarray, sfreq: float, lo: float, hi: float) -> np.ndarray:
  """Mean periodogram power per row of x [C, T] in [lo, hi] Hz."""
  f = np.fft.rfftfreq(x.shape[-1], 1.0 / sfreq)
  p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
  return p[..., (f >= lo) & (f <= hi)].mean(axis=-1)


def test_shape_names_units_and_amplitude(raw):
  x = raw.get_data() * 1e6
  assert x.shape == (len(synthetic.ELECTRODES_1020), int(120 * SFREQ))
  assert raw.ch_names == list(synthetic.ELECTRODES_1020)
  rms = x.std(axis=1)
  assert np.all(rms > 5) and np.all(rms < 40), rms           # tens of µV
  assert np.mean(np.abs(x) < 100) > 0.995                     # mostly under 100 µV


def test_deterministic_for_a_seed(raw):
  again = synthetic.make_recording(1, 0, seed=3, duration_s=120.0, sfreq=SFREQ)
  np.testing.assert_array_equal(raw.get_data(), again.get_data())
  assert list(again.annotations.description) == list(raw.annotations.description)
  other = synthetic.make_recording(1, 0, seed=4, duration_s=120.0, sfreq=SFREQ)
  assert not np.allclose(raw.get_data(), other.get_data())


def test_physiological_components(raw):
  x = raw.get_data() * 1e6
  ch = {n: i for i, n in enumerate(raw.ch_names)}
  params = synthetic.SubjectParams.draw(3, 1)
  alpha = band_power(x, SFREQ, params.alpha_hz - 0.5, params.alpha_hz + 0.5)
  assert alpha[ch["O1"]] > 4 * alpha[ch["Fp1"]]               # posterior alpha
  assert alpha[ch["O2"]] > alpha[ch["P4"]] > alpha[ch["F4"]]
  line = band_power(x, SFREQ, 59.5, 60.5)
  near = band_power(x, SFREQ, 55, 58)
  assert np.all(line > 3 * near) and np.median(line / near) > 20   # 60 Hz line noise
  peak = np.percentile(x, 99.9, axis=1)    # frontal blinks: large positive deflections
  assert min(peak[ch["Fp1"]], peak[ch["Fp2"]]) > 1.4 * max(peak[ch["Cz"]], peak[ch["O1"]])
  muscle = band_power(x, SFREQ, 35, 55)
  assert max(muscle[ch["T7"]], muscle[ch["T8"]]) > 2 * muscle[ch["Cz"]]  # temporal EMG
  # 1/f background: more power at 2-4 Hz than at 25-30 Hz at a central site.
  assert band_power(x, SFREQ, 2, 4)[ch["Cz"]] > 5 * band_power(x, SFREQ, 25, 30)[ch["Cz"]]


def test_subjects_differ():
  a, b = synthetic.SubjectParams.draw(0, 0), synthetic.SubjectParams.draw(0, 1)
  assert a != b
  assert 8.0 <= a.alpha_hz <= 12.0 and 8.0 <= b.alpha_hz <= 12.0


def test_class_events_are_balanced_and_separable(raw):
  ann = raw.annotations
  names, counts = np.unique(ann.description, return_counts=True)
  assert set(names) == set(synthetic.CLASSES)
  assert counts.max() - counts.min() <= 1
  assert np.all(ann.duration == 4.0)
  x = raw.get_data() * 1e6
  ch = {n: i for i, n in enumerate(raw.ch_names)}

  def mean_power(label, channel, lo, hi):
    segs = [x[ch[channel], int(o * SFREQ):int((o + 4) * SFREQ)]
            for o, d in zip(ann.onset, ann.description) if d == label]
    return np.mean([band_power(s[None], SFREQ, lo, hi)[0] for s in segs])

  beta = synthetic.SubjectParams.draw(3, 1).beta_hz
  assert mean_power("frontal_theta", "Fz", 5, 7) > 3 * mean_power("parietal_erp", "Fz", 5, 7)
  assert (mean_power("left_central_beta", "C3", beta - 1.5, beta + 1.5)
          > 3 * mean_power("right_central_beta", "C3", beta - 1.5, beta + 1.5))
  assert (mean_power("right_central_beta", "C4", beta - 1.5, beta + 1.5)
          > 3 * mean_power("left_central_beta", "C4", beta - 1.5, beta + 1.5))
  # The ERP: a positive P3 at Pz ~350 ms after each second of the event.
  erp = [x[ch["Pz"], int((o + 0.3) * SFREQ):int((o + 0.4) * SFREQ)].mean()
         - x[ch["Pz"], int((o + 0.8) * SFREQ):int((o + 0.9) * SFREQ)].mean()
         for o, d in zip(ann.onset, ann.description) if d == "parietal_erp"]
  assert np.mean(erp) > 10


def test_channel_label_naming():
  assert synthetic.channel_label("T7", "tuh") == "EEG T3-REF"
  assert synthetic.channel_label("Fp1", "tuh") == "EEG FP1-REF"
  assert synthetic.channel_label("P8", "plain") == "P8"
  with pytest.raises(ValueError):
    synthetic.channel_label("Cz", "bids")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  files = synthetic.write_corpus(out, n_subjects=3, recordings=3, minutes=5.5, seed=1)
  return out, files


def test_write_corpus_layout_formats_and_annotations(corpus, tmp_path):
  out, files = corpus
  assert [f.relative_to(out).as_posix() for f in files[:3]] == [
      "sub-01/sub-01_rec-01.edf", "sub-01/sub-01_rec-02.edf", "sub-01/sub-01_rec-03_raw.fif"]
  meta = json.loads((out / "corpus.json").read_text())
  assert meta["classes"] == list(synthetic.CLASSES) and len(meta["files"]) == 9
  tuh = mne.io.read_raw(files[0], verbose="error")
  assert "EEG FP1-REF" in tuh.ch_names and "EEG T3-REF" in tuh.ch_names
  plain = mne.io.read_raw(files[1], verbose="error")
  assert "Fp1" in plain.ch_names and "T7" in plain.ch_names
  assert tuh.info["sfreq"] == 256.0 and tuh.n_times == int(5.5 * 60 * 256)
  for f in files[:3]:
    r = mne.io.read_raw(f, verbose="error")
    assert set(r.annotations.description) == set(synthetic.CLASSES)
  # Same arguments -> byte-identical files.
  again = synthetic.write_corpus(tmp_path, n_subjects=1, recordings=3, minutes=5.5, seed=1)
  for a, b in zip(files[:3], again):
    assert a.read_bytes() == b.read_bytes()


def test_brainvision_format(tmp_path):
  files = synthetic.write_corpus(tmp_path, n_subjects=1, recordings=1, minutes=0.5,
                                 formats=("brainvision",), namings=("plain",))
  assert files[0].suffix == ".vhdr"
  r = mne.io.read_raw(files[0], verbose="error")
  assert {d.split("/")[-1] for d in r.annotations.description} <= set(synthetic.CLASSES)


def test_corpus_through_pretrain_tcp20(corpus, tmp_path):
  out, files = corpus
  m = convert.convert(str(out), get_recipe("pretrain_tcp20"), tmp_path / "pre", workers=1,
                      progress_interval_s=1e9)
  assert m["rejected"] == []
  per_file = (5.5 * 60 - 120) // 4                                 # trimmed 1 min each end
  assert m["windows"] + sum(m["rejected_windows"].values()) == per_file * len(files)
  assert m["windows"] >= 0.9 * per_file * len(files)               # few artefact rejections
  with read_split(tmp_path / "pre", "train") as reader:
    r = reader[0]
  assert r.signal.shape == (20, 256) and np.abs(r.signal).max() <= 100


def test_corpus_through_generic_with_annotation_labels(corpus, tmp_path):
  out, files = corpus
  recipe = get_recipe("generic", channels=get_recipe("pretrain_tcp20").config.channels,
                      params={"label_source": "annotations",
                              "label_map": synthetic.GENERIC_LABEL_MAP,
                              "split_rule": "lists",
                              "split_lists": "train=sub-01,val=sub-02,test=sub-03"})
  m = convert.convert(str(out), recipe, tmp_path / "gen", workers=1, progress_interval_s=1e9)
  assert m["rejected"] == []
  assert set(m["counts"]["split"]) == {"train", "val", "test"}
  assert m["counts"]["subject"] == {
      "train": {"sub-01": m["counts"]["split"]["train"]},
      "val": {"sub-02": m["counts"]["split"]["val"]},
      "test": {"sub-03": m["counts"]["split"]["test"]}}
  n_events = sum(sum(f["events"].values())
                 for f in json.loads((out / "corpus.json").read_text())["files"])
  assert m["windows"] == n_events
  for split, labels in m["counts"]["label"].items():
    assert set(labels) == set(synthetic.CLASSES)
    assert max(labels.values()) - min(labels.values()) <= 3


def test_cli(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "data_prep.synthetic", f"--output={tmp_path}", "--n_subjects=1",
       "--recordings=2", "--minutes=0.5", "--seed=5", "--formats=edf,brainvision"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "sub-01" / "sub-01_rec-01.edf").exists()
  assert (tmp_path / "sub-01" / "sub-01_rec-02.vhdr").exists()
  assert (tmp_path / "corpus.json").exists()
