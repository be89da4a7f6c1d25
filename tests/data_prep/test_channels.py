"""Channel-name normalisation, aliases, derivations as data, positions of derived channels."""

import numpy as np
import pytest

from data_prep import channels as chans
from data_prep import montages
from neuript_jax import geometry


@pytest.mark.parametrize("raw, expected", [
    ("EEG FP1-REF", "Fp1"), ("EEG FP1-LE", "Fp1"), ("EEG Fp1-Ref", "Fp1"),
    ("EEG CZ-REF", "Cz"), ("FPZ", "Fpz"), ("CZ", "Cz"), ("Fc5.", "FC5"), ("Cz..", "Cz"),
    ("Iz..", "Iz"), ("Fcz.", "FCz"), ("Poz.", "POz"), ("EEG T3-REF", "T3"), ("T7", "T7"),
    ("EEG A1-Ref", "A1"), ("EEG Fpz-Cz", "Fpz-Cz"), ("EEG Pz-Oz", "Pz-Oz"),
    ("EEG-Fz", "Fz"), (" EEG F9-Ref ", "F9"), ("EEG A2-A1", "A2-A1"),
    # Non-EEG channels keep their (recognisably non-electrode) names.
    ("ECG ECG1", "ECG ECG1"), ("POL E", "POL E"), ("SaO2 X9", "SaO2 X9"),
    ("POL T1", "POL T1"), ("EEG EKG1-REF", "EKG1"), ("PHOTIC-REF", "PHOTIC"),
    ("EEG 000", "000"), ("EOG horizontal", "EOG horizontal"),
])
def test_normalize_name(raw, expected):
  assert chans.normalize_name(raw) == expected


def test_non_eeg_names_are_not_electrodes():
  for name in ("ECG ECG1", "POL E", "SaO2 X9", "EKG1", "PHOTIC", "000", "POL T1"):
    assert not chans.is_electrode(chans.normalize_name(name))
  for name in ("Fp1", "T3", "T7", "A1", "M2", "FCz", "Iz"):
    assert chans.is_electrode(name)


def test_duplicate_normalised_names_keep_raw_label():
  assert chans.normalize_names(["EEG FP1-REF", "EEG FP1-LE", "EEG CZ-REF"]) == [
      "Fp1", "EEG FP1-LE", "Cz"]


def test_aliases_resolve_both_ways():
  modern = ["T7", "T8", "P7", "P8", "M1"]
  legacy = ["T3", "T4", "T5", "T6", "A1"]
  for i, name in enumerate(legacy):
    assert chans.find_electrode(name, modern) == i
  for i, name in enumerate(modern):
    assert chans.find_electrode(name, legacy) == i
  assert chans.find_electrode("Cz", modern) is None


def test_tcp20_is_data_with_the_correct_fp1_f3_pair():
  tcp = montages.MONTAGES["tcp20"]
  assert len(tcp) == 20 and tcp[12] == "Fp1-F3" and "Fp2-F3" not in tcp
  assert len(montages.MONTAGES["tcp22"]) == 22
  assert montages.resolve_channel_set("tcp20") == tcp
  assert montages.resolve_channel_set("Cz, Fp1-F7") == ("Cz", "Fp1-F7")


def test_tcp_derivation_from_legacy_and_modern_names():
  electrodes = montages.MONTAGES["tcp20_electrodes"]
  rng = np.random.default_rng(0)
  data = rng.standard_normal((len(electrodes), 50))
  value = dict(zip(electrodes, data))
  expected = np.stack([value[a] - value[b] for a, b in
                       (geometry.split_bipolar(p) for p in montages.MONTAGES["tcp20"])])
  legacy = list(electrodes)
  modern = [{"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}.get(n, n) for n in electrodes]
  for names in (legacy, modern):
    out = montages.derive(data, names, montages.MONTAGES["tcp20"])
    np.testing.assert_allclose(out, expected)


def test_derivation_picks_only_needed_channels_and_uses_recorded_pairs():
  names = ["Fpz-Cz", "Pz-Oz", "EOG horizontal", "Cz", "Fpz"]
  plan = montages.plan_derivation(("Fpz-Cz", "Pz-Oz"), names)
  assert plan.pick == (0, 1)
  np.testing.assert_array_equal(plan.matrix, np.eye(2))


def test_car_then_bipolar_equals_plain_bipolar_and_monopolar_car():
  names = ["Fp1", "F7", "Cz", "ECG"]
  data = np.array([[1.0, 2.0], [3.0, 5.0], [2.0, -1.0], [100.0, 100.0]])
  car = montages.derive(data, names, ("Fp1", "Cz"), reference="car")
  mean = data[:3].mean(axis=0)  # ECG is not an electrode, so not in the average
  np.testing.assert_allclose(car, np.stack([data[0] - mean, data[2] - mean]), atol=1e-12)
  bip = montages.derive(data, names, ("Fp1-F7",), reference="car")
  np.testing.assert_allclose(bip, [data[0] - data[1]])


def test_missing_channels_are_named():
  names = chans.normalize_names(["EEG FP1-REF", "EEG F7-REF", "EEG CZ-REF", "ECG ECG1"])
  with pytest.raises(chans.MissingChannelsError) as err:
    montages.plan_derivation(montages.MONTAGES["tcp20"], names)
  assert str(err.value).startswith(
      "missing channel(s) T3/T7, T5/P7, O1, Fp2, F8, T4/T8, T6/P8, O2, C3, C4, F3, P3, F4, P4 "
      "(recording has: Fp1, F7, Cz, ECG ECG1)")


def test_positions_of_bipolar_channels_are_midpoints():
  pos = geometry.electrode_positions(["Fp1-F7", "Fp1", "F7"], "standard_1020")
  np.testing.assert_allclose(pos[0], (pos[1] + pos[2]) / 2)
  assert np.all(np.abs(pos) < 0.2)  # metres
