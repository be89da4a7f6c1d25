import numpy as np
import pytest

from neuript_jax import geometry


def test_reference_positions_for_every_golden_dataset_key(golden_dir):
  z = np.load(golden_dir / "utils.npz")
  keys = [k for k in z.files if k.startswith("pos3d/")]
  assert len(keys) >= 10
  for k in keys:
    np.testing.assert_array_equal(geometry.dataset_positions(k[len("pos3d/"):]), z[k], err_msg=k)


def test_tcp_typo_switch_moves_channel_12_only():
  typo = geometry.dataset_positions("TUEV")
  fixed = geometry.dataset_positions("TUEV", fix_typo=True)
  assert typo[12].tolist() == [20, 49, 8] and fixed[12].tolist() == [11, 49, 8]
  assert (typo != fixed).any(axis=1).sum() == 1


def test_bipolar_is_midpoint_and_names_are_case_insensitive():
  p = geometry.electrode_positions(["Fp1", "F7", "Fp1-F7", "FP1-f7"])
  np.testing.assert_allclose(p[2], (p[0] + p[1]) / 2)
  np.testing.assert_allclose(p[3], p[2])
  assert p.shape == (4, 3) and np.abs(p).max() < 0.2  # metres on a head


def test_unknown_channels_are_named():
  with pytest.raises(geometry.UnknownChannelError) as e:
    geometry.electrode_positions(["Cz", "EEG 001", "Xx-Cz"])
  assert e.value.names == ["EEG 001", "Xx (in Xx-Cz)"]
  assert "EEG 001" in str(e.value)


def test_quantize_is_per_dataset_and_in_range():
  q = geometry.quantize_positions(geometry.electrode_positions(geometry.SEEDV17))
  assert q.min() == 0 and q.max() == 49 and q.dtype == np.int64
  assert geometry.quantize_positions(np.ones((1, 3))).tolist() == [[0, 0, 0]]


def test_lobe_groups_tables_and_errors():
  assert len(geometry.lobe_groups("Functional", 20)) == 5
  assert geometry.lobe_groups("Functional", 20)[3] == (1, 2, 8)   # groups overlap (8 and 11)
  assert geometry.lobe_groups("Mean", 7) == (tuple(range(7)),)
  assert len(geometry.lobe_groups("None", 7)) == 7
  with pytest.raises(ValueError, match="no 'Sagittal' partition for 17"):
    geometry.lobe_groups("Sagittal", 17)
  with pytest.raises(ValueError, match="empty"):
    geometry.lobe_groups("Functional", 22, "BCICIV-2A-SC-TTS")
