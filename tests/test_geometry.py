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


def test_auto_lobes_reproduce_the_reference_tcp_tables():
  for names, n in ((geometry.TCP20, 20), (geometry.TCP20_REFERENCE_TYPO, 20),
                   (geometry.TCP22, 22)):
    assert geometry.auto_lobe_groups(names) == geometry.LOBE_GROUPS["Functional"][n]
  # Case and the old/new names of the same sites do not matter.
  tcp_new = [n.replace("T3", "T7").replace("T4", "T8").replace("T5", "P7").replace("T6", "P8")
             for n in geometry.TCP20]
  assert geometry.auto_lobe_groups(tcp_new) == geometry.LOBE_GROUPS["Functional"][20]
  assert geometry.auto_lobe_groups([n.upper() for n in geometry.TCP20]) == \
      geometry.LOBE_GROUPS["Functional"][20]


def test_auto_lobes_where_the_reference_tables_use_other_partitions():
  # SEED-V: the reference's table is three anterior-posterior bands; the lobe rule gives five
  # lobes (T7/P7 left temporal, T8/P8 right temporal, P3/P4 with the centro-parietal group).
  assert geometry.LOBE_GROUPS["Functional"][17] == (
      (0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10), (11, 12, 13, 14, 15, 16))
  assert geometry.auto_lobe_groups(geometry.SEEDV17) == (
      (0, 1, 2, 3, 4, 5), (7, 8, 9, 12, 13), (15, 16), (6, 11), (10, 14))
  # BCIC-IV-2A: the reference groups pairs by their first electrode and side; every pair there
  # ends on a central/parietal or parieto-occipital electrode.
  assert geometry.auto_lobe_groups(geometry.BCIC2A16) == (
      (0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 13, 14), (6, 9, 12, 15))


def test_auto_lobes_from_positions_for_unnamed_electrodes():
  names = ["O1", "F3", "T7", "C4", "T8"]
  pos = geometry.electrode_positions(names, "standard_1005")
  anonymous = [f"EEG {i:03d}" for i in range(len(names))]
  assert geometry.auto_lobe_groups(anonymous, pos) == geometry.auto_lobe_groups(names)
  # Another template's positions (a different head) mostly agree with the names.
  table = geometry._montage_positions("biosemi64")
  agree = [geometry.electrode_lobe(n) == geometry.electrode_lobe("X", p)
           for n, p in table.items()]
  assert np.mean(agree) > 0.9
  with pytest.raises(geometry.UnknownChannelError, match="EEG 000"):
    geometry.auto_lobe_groups(anonymous)


def test_model_config_uses_auto_lobes_for_custom_channels():
  from neuript_jax.configs.common import model_config, to_model_config
  c = model_config(channels=("F3", "F4", "C3", "C4", "O1", "O2", "T7", "T8"),
                   montage="standard_1005", part="Functional")
  assert to_model_config(c).iilp_groups() == ((0, 1), (2, 3), (4, 5), (6,), (7,))
  c.part = "Auto"
  c.channels, c.data = None, "TUEV"
  assert to_model_config(c).iilp_groups() == geometry.LOBE_GROUPS["Functional"][20]
