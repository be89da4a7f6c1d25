"""launch.sweep: the grid over config paths and its errors, flag validation (one case per
rule), shard assignment, dataset configs from per-dataset config files and from the manifest,
dry run, summary mean ± std and best-on-validation on hand-made results, a failing run
recorded without stopping the sweep, resume after SIGKILL and SIGTERM (with
tests.fake_finetune, waiting for events, never for time), and one real tiny sweep through
launch.finetune checked in summary.md / summary.csv."""

import ast
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neuript_jax import geometry
from neuript_jax.sweep import datasets as datasets_lib
from neuript_jax.sweep import overrides, plan, records, runner, summary
from neuript_jax.sweep.overrides import SweepError
from tests.conftest import REPO
from tests.test_finetune import MODEL, RUN, shards  # noqa: F401  (shards: fixture)

FAKE = "tests.fake_finetune"
TUEV_LABELS = ["spsw", "gped", "pled", "eyem", "artf", "bckg"]
BASE = os.path.join(REPO, datasets_lib.DEFAULT_BASE_CONFIG)
# A per-dataset config as neuript_jax/configs/downstream/<recipe>.py writes it: get_config(arg)
# with arg paper|cpu, a complete fine-tuning config.
TUEV_CONFIG = """
from neuript_jax.configs import finetune

def get_config(arg="paper"):
  if arg not in ("paper", "cpu"):
    raise ValueError(f"unknown arg {arg!r}")
  c = finetune.get_config()
  c.model.data = "TUEV"
  c.model.num_classes = 6
  c.model.T = 320
  c.select_metric = "cohen_kappa"
  c.init_from = ""
  c.optim.lr = 5e-4 if arg == "paper" else 2e-3
  return c
"""


@pytest.fixture(scope="module")
def configs():
  return {BASE: overrides.resolve(BASE, {}, "test")}


@pytest.fixture
def configs_dir(tmp_path):
  d = tmp_path / "downstream"
  d.mkdir()
  (d / "tuev.py").write_text(TUEV_CONFIG)
  return str(d)


def write_manifest(path, recipe="tuev", labels=TUEV_LABELS, channels=geometry.TCP20,
                   window=320):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "manifest.json"), "w") as f:
    json.dump({"recipe": {"name": recipe, "config": {"label_names": list(labels)}},
               "window_samples": window, "channels": list(channels) if channels else None,
               "montage": "standard_1020"}, f)
  return str(path)


def sweep_cmd(workdir, *extra, configs_dir=None):
  """launch.sweep with an empty --configs_dir (settings from the manifests) unless given."""
  if configs_dir is None:
    configs_dir = os.path.join(os.path.dirname(workdir), "no_configs")
    os.makedirs(configs_dir, exist_ok=True)
  return [sys.executable, "-m", "launch.sweep", f"--workdir={workdir}",
          f"--configs_dir={configs_dir}", *extra]


def fake_env(**kw):
  e = dict(os.environ)
  e.pop("FAKE_HOLD", None)
  e.update({k: str(v) for k, v in kw.items()})
  return e


def read_rows(workdir):
  return records.read_results_jsonl(os.path.join(workdir, "results.jsonl"))


def wait_for(condition, what, proc=None, timeout=120.0):
  """Poll `condition` until it holds; fail if `proc` exits first or after `timeout` s."""
  deadline = time.monotonic() + timeout
  while not condition():
    if proc is not None and proc.poll() is not None:
      pytest.fail(f"the sweep exited (code {proc.returncode}) before {what}: "
                  f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
    if time.monotonic() > deadline:
      pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
    time.sleep(0.02)


def alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      state = f.read().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return False
  return state not in ("Z", "X")


def fallback(tmp_path, name="tuev", **kw):
  """A dataset without a config file (configs_dir empty): base config + manifest."""
  return datasets_lib.load_dataset(name, write_manifest(tmp_path / name, **kw),
                                   str(tmp_path / "none"), "paper", BASE)


# -- grid -----------------------------------------------------------------------------------------

def test_grid_over_config_paths_and_tuples(configs):
  axes = plan.parse_grid("optim.lr=1e-5,5e-6; model.c_layers=3,6;"
                         "model.merge_layers=(1,2,2),(1,1,2)", configs)
  assert [a.path for a in axes] == ["optim.lr", "model.c_layers", "model.merge_layers"]
  assert axes[2].values == ("(1,2,2)", "(1,1,2)")
  names = [n for n, _ in plan.settings(axes)]
  assert len(names) == 8 and len(set(names)) == 8
  assert names[0] == "optim.lr=1e-5,model.c_layers=3,model.merge_layers=1-2-2"
  assert plan.settings([]) == [("default", {})]


@pytest.mark.parametrize("grid,needle", [
    ("lr=1e-5", "--grid: 'lr' is not a config field (no 'lr'); did you mean optim.lr?"),
    ("model.c_layers=3,three", "--grid: model.c_layers=three: IllegalFlagValueError"),
    ("optim.lr", "--grid entry 'optim.lr': expected path=value1,value2"),
    ("optim.lr=1e-5;optim.lr=2e-5", "--grid: optim.lr is swept twice"),
    ("optim=1", "--grid: 'optim' is a group of fields"),
    ("seed=1,2", "--grid: 'seed' cannot be swept or set here: use --seeds"),
    ("data.sources=(),", "'data.sources' cannot be swept or set here: use --data"),
    ("model.dropout=0.1,", "--grid: model.dropout: empty value"),
    ("model.dropout=0.1,0.1", "--grid: model.dropout: repeated value"),
    ("model.merge_layers=(1,2", "--grid: model.merge_layers=(1,2: IllegalFlagValueError"),
    ("model.no_such=1", "no 'model.no_such'"),
])
def test_bad_grid_stops_with_the_key_and_value(configs, grid, needle):
  with pytest.raises(SweepError) as e:
    plan.parse_grid(grid, configs)
  assert needle in str(e.value), str(e.value)


def test_grid_file_json_and_py(configs, tmp_path):
  (tmp_path / "g.json").write_text(json.dumps({"optim.lr": [1e-5, 5e-6],
                                               "model.merge_layers": [[1, 2, 2]]}))
  (tmp_path / "g.py").write_text("GRID = {'model.c_layers': [3, 6], "
                                 "'async_checkpoint': [False]}\n")
  a = plan.load_grid_file(str(tmp_path / "g.json"), configs)
  assert [x.values for x in a] == [("1e-05", "5e-06"), ("(1, 2, 2)",)]
  b = plan.load_grid_file(str(tmp_path / "g.py"), configs)
  assert [x.values for x in b] == [("3", "6"), ("false",)]
  (tmp_path / "bad.json").write_text(json.dumps({"model.c_layers": 3}))
  with pytest.raises(SweepError, match="key 'model.c_layers' needs a list"):
    plan.load_grid_file(str(tmp_path / "bad.json"), configs)


# -- flag validation: one case per rule ----------------------------------------------------------

@pytest.mark.parametrize("call,needle", [
    (lambda: plan.parse_dataset_names([]), "--datasets is empty"),
    (lambda: plan.parse_dataset_names(["tuev", "a b"]), "--datasets=tuev,a b: name 'a b'"),
    (lambda: plan.parse_dataset_names(["tuev", "tuev"]), "--datasets=tuev,tuev: 'tuev' is "
     "named twice"),
    (lambda: plan.parse_seeds([]), "--seeds is empty"),
    (lambda: plan.parse_seeds(["0", "x"]), "--seeds=0,x: 'x' is not an integer"),
    (lambda: plan.parse_seeds(["-1"]), "--seeds=-1: seed -1 is negative"),
    (lambda: plan.parse_seeds(["1", "2", "1"]), "--seeds=1,2,1: seed 1 is given twice"),
    (lambda: plan.parse_shard("2/2"), "--shard='2/2'"),
    (lambda: plan.parse_shard("1"), "--shard='1'"),
    (lambda: plan.parse_shard("-1/2"), "--shard='-1/2'"),
    (lambda: plan.parse_shard("a/b"), "--shard='a/b'"),
    (lambda: datasets_lib.parse_data_flag("tuev=/a,tuev=/b"), "--data names dataset 'tuev' "
     "twice"),
    (lambda: runner.Sweeper("/nonexistent", parallel=0), "--parallel=0: must be >= 1"),
    (lambda: runner.Sweeper("/nonexistent", devices_per_run=-1), "--devices_per_run=-1: must "
     "be >= 0"),
    (lambda: runner.Sweeper("/nonexistent", parallel=2, devices_per_run=2,
                            env={"CUDA_VISIBLE_DEVICES": "0,1,2"}),
     "--parallel=2 slots x 2 = 4 devices, but there are 3 (CUDA_VISIBLE_DEVICES='0,1,2')"),
])
def test_bad_flag_values_stop_with_the_flag_and_value(call, needle):
  with pytest.raises(SweepError) as e:
    call()
  assert needle in str(e.value), str(e.value)


def test_dataset_without_a_folder_or_manifest_or_labels(tmp_path):
  with pytest.raises(SweepError, match=r"--configs_dir=/no/such: no such folder"):
    datasets_lib.resolve_datasets(["tuev"], {}, str(tmp_path), "/no/such")
  with pytest.raises(SweepError, match=r"--datasets=tuev: give --data=tuev=PATH or --data_root"):
    datasets_lib.resolve_datasets(["tuev"], {}, "")
  with pytest.raises(SweepError, match=r"--data names \['x'\] that are not in --datasets"):
    datasets_lib.resolve_datasets(["tuev"], {"x": "/x"}, "")
  with pytest.raises(SweepError, match="--datasets=nope: no .*nope/manifest.json"):
    datasets_lib.resolve_datasets(["nope"], {}, str(tmp_path))
  with pytest.raises(SweepError, match="--datasets=u: .* lists 0 label_names"):
    datasets_lib.load_dataset("u", write_manifest(tmp_path / "u", "pretrain_tcp20", []))


@pytest.mark.parametrize("manifest,sets,needle", [
    (dict(labels=TUEV_LABELS[:5]), [], "model.num_classes=6 but .* lists 5 label_names"),
    (dict(window=640), [], "model.T=320 but its windows are 640 samples"),
    (dict(), ["tuev:data.window_len=400"], "data.window_len=400 is longer than the 320-sample"),
    (dict(channels=geometry.SEEDV17), [], "model.data=TUEV gives channels"),
    (dict(), ["tuev:model.channels=('C3', 'Cz')"], "model.channels gives channels"),
    (dict(), ["total_steps=6", "optim.pct_start=0.1"], "config.total_steps=6: is shorter than "
     "the warm-up"),
    (dict(), ["tuev:mesh.fsdp=0"], "config.mesh.fsdp=0: must be a positive integer"),
])
def test_config_that_does_not_fit_the_manifest_stops(tmp_path, configs_dir, manifest, sets,
                                                     needle):
  d = datasets_lib.load_dataset("tuev", write_manifest(tmp_path / "tuev", **manifest),
                                configs_dir, "paper")
  parsed = plan.parse_sets(sets, {"tuev": (d.config_spec, d.config)})
  with pytest.raises(SweepError, match="--datasets=tuev: run tuev/default/seed0 .*" + needle):
    plan.plan([d], [], [0], parsed, str(tmp_path / "sw"))


# -- plan -----------------------------------------------------------------------------------------

DOWNSTREAM_DIR = os.path.join(REPO, datasets_lib.DEFAULT_CONFIGS_DIR)
DOWNSTREAM = sorted(n[:-3] for n in os.listdir(DOWNSTREAM_DIR)
                    if n.endswith(".py") and n != "__init__.py") \
    if os.path.isdir(DOWNSTREAM_DIR) else []


@pytest.mark.parametrize("recipe", DOWNSTREAM)
def test_every_downstream_config_fits_its_recipe(tmp_path, recipe):
  """neuript_jax/configs/downstream/<recipe>.py at both sizes agrees with what the data_prep
  recipe of that name writes (classes, window, channels)."""
  from data_prep.recipes import get_recipe
  cfg = get_recipe(recipe).config
  data = write_manifest(tmp_path / recipe, recipe, cfg.label_names, cfg.channels,
                        cfg.window_samples)
  for size in datasets_lib.SIZES:
    d = datasets_lib.load_dataset(recipe, data, DOWNSTREAM_DIR, size)
    assert d.from_config_file and d.config_spec.endswith(f"{recipe}.py:{size}")
    (run,) = plan.plan([d], [], [0], {}, str(tmp_path / "sw"))
    assert run.config.data.sources == ((os.path.realpath(data), 1.0),)

def test_dataset_from_its_config_file(tmp_path, configs_dir):
  data = write_manifest(tmp_path / "tuev_v2")   # any folder name; the recipe picks the file
  d = datasets_lib.load_dataset("tuev_v2", data, configs_dir, "cpu")
  assert d.from_config_file and d.config_spec == os.path.join(configs_dir, "tuev.py") + ":cpu"
  assert list(d.overrides) == ["data.sources"] and d.paper_key == "tuev"
  assert d.config.optim.lr == 2e-3
  sets = plan.parse_sets(["epochs=7", "tuev_v2:optim.lr=1e-4"],
                         {"tuev_v2": (d.config_spec, d.config)})
  runs = plan.plan([d], plan.parse_grid("model.c_layers=3,4", {d.config_spec: d.config}), [0, 1],
                   sets, str(tmp_path / "sw"))
  assert [r.run_id for r in runs] == [f"tuev_v2/model.c_layers={c}/seed{s}"
                                      for c in (3, 4) for s in (0, 1)]
  r = runs[3]
  assert r.overrides == {"data.sources": d.overrides["data.sources"], "epochs": "7",
                         "optim.lr": "1e-4", "model.c_layers": "4", "seed": "1"}
  assert (r.config.optim.lr, r.config.epochs, r.config.model.c_layers, r.config.seed,
          r.config.model.data, r.config.select_metric) == (1e-4, 7, 4, 1, "TUEV", "cohen_kappa")
  assert r.config.data.sources == ((os.path.realpath(data), 1.0),)
  cmd = plan.command(r)
  assert cmd[1:5] == ["-m", "launch.finetune", f"--config={d.config_spec}",
                      f"--workdir={tmp_path}/sw/runs/tuev_v2/model.c_layers=4/seed1"]
  assert "--config.model.num_classes=6" not in cmd and "--config.seed=1" in cmd
  paper = datasets_lib.load_dataset("tuev", data, configs_dir, "paper")
  assert paper.config_spec.endswith("tuev.py:paper") and paper.config.optim.lr == 5e-4
  with pytest.raises(SweepError, match="--size=gpu: choose one of paper, cpu"):
    datasets_lib.load_dataset("tuev", data, configs_dir, "gpu")


def test_datasets_from_manifests_without_config_files(configs, tmp_path):
  write_manifest(tmp_path / "tuev")
  tuab = write_manifest(tmp_path / "tuab", "tuab", ["normal", "abnormal"], window=640)
  other = write_manifest(tmp_path / "mine", "generic", ["a", "b", "c"], ("C3", "Cz", "Pz"), 64)
  typo = write_manifest(tmp_path / "typo", "generic", ["a", "b"],
                        geometry.TCP20_REFERENCE_TYPO, 64)
  (tmp_path / "none").mkdir()
  d = datasets_lib.resolve_datasets(["tuev", "tuab", "mine", "typo"], {"mine": other,
                                    "typo": typo}, str(tmp_path), str(tmp_path / "none"),
                                    "paper", BASE)
  assert not d[0].from_config_file and d[0].config_spec == BASE
  assert d[0].overrides["model.data"] == "Stage1" and d[0].paper_key == "tuev"
  assert d[3].overrides["model.data"] == "Stage1"       # the typo'd spelling matches too
  assert d[0].overrides["model.num_classes"] == "6" and d[0].overrides["model.T"] == "320"
  assert d[0].overrides["select_metric"] == "cohen_kappa"
  assert d[1].overrides["select_metric"] == "auroc" and d[1].task == "binary"
  assert ast.literal_eval(d[1].overrides["data.sources"]) == ((os.path.realpath(tuab), 1.0),)
  assert d[2].overrides["model.channels"] == "('C3', 'Cz', 'Pz')" and d[2].paper_key is None
  sets = plan.parse_sets(["optim.lr=1e-4", "tuev:optim.lr=2e-4", "data.window_len=64"],
                         {x.name: (x.config_spec, x.config) for x in d})
  runs = plan.plan(d, plan.parse_grid("model.c_layers=3", configs), [0, 1], sets,
                   str(tmp_path / "sw"))
  assert len(runs) == 8
  o = runs[0].overrides
  assert (o["optim.lr"], o["model.T"], o["model.c_layers"], o["seed"]) == ("2e-4", "64", "3", "0")
  assert runs[2].overrides["optim.lr"] == "1e-4" and runs[2].config.model.T == 64
  with pytest.raises(SweepError, match=r"--set=x:optim.lr=1: dataset 'x' is not in"):
    plan.parse_sets(["x:optim.lr=1"], {"tuev": (BASE, configs[BASE])})
  with pytest.raises(SweepError, match=r"--set=lr=1: 'lr' is not a config field .*optim.lr"):
    plan.parse_sets(["lr=1"], {"tuev": (BASE, configs[BASE])})
  varying = fallback(tmp_path, "var", channels=None)
  with pytest.raises(SweepError, match="--datasets=var: its channels vary .*model.channels"):
    plan.plan([varying], [], [0], {}, str(tmp_path / "sw"))
  fixed = plan.parse_sets(["var:model.data=TUEV"], {"var": (BASE, varying.config)})
  assert plan.plan([varying], [], [0], fixed, str(tmp_path / "sw"))[0].config.model.data == "TUEV"


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_cover_every_run_exactly_once(configs, tmp_path, n):
  d = [fallback(tmp_path), fallback(tmp_path, "tuab", recipe="tuab", labels=["n", "a"])]
  grid = "optim.lr=1e-5,5e-6;model.c_layers=3,6,4"
  runs = plan.plan(d, plan.parse_grid(grid, configs), [0, 1, 2], {}, str(tmp_path))
  assert len(runs) == 36
  shares = [plan.shard_runs(runs, i, n) for i in range(n)]
  ids = [r.run_id for s in shares for r in s]
  assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == 36
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  again = plan.plan(d, plan.parse_grid(grid, configs), [0, 1, 2], {}, str(tmp_path))
  assert [r.run_id for r in plan.shard_runs(again, n - 1, n)] == [r.run_id for r in shares[-1]]


def test_dry_run_prints_commands(tmp_path, configs_dir):
  tuev = write_manifest(tmp_path / "tuev")
  mine = write_manifest(tmp_path / "mine", "generic", ["a", "b"], ("C3", "Cz", "Pz"), 64)
  common = ("--datasets=tuev,mine", f"--data=tuev={tuev},mine={mine}", "--size=cpu")
  res = subprocess.run(sweep_cmd(tmp_path / "sw", *common, "--seeds=0,1",
                                 "--grid=optim.lr=1e-5,5e-6", "--shard=1/2", "--dry_run",
                                 configs_dir=configs_dir),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  assert lines[0] == "# 8 runs in the sweep, 4 in shard 1/2"
  assert lines[1].startswith("# tuev: ") and lines[1].endswith(f"config {configs_dir}/tuev.py:cpu")
  assert lines[2].endswith("config neuript_jax/configs/finetune.py + settings read from its "
                           "manifest")
  cmds = lines[3:]
  assert len(cmds) == 4 and all("-m launch.finetune" in ln for ln in cmds)
  assert f"--config={configs_dir}/tuev.py:cpu" in cmds[0] and "optim.lr=1e-5/seed1" in cmds[0]
  assert "--config.optim.lr=1e-5" in cmds[0] and "--config.model.num_classes" not in cmds[0]
  assert "--config=neuript_jax/configs/finetune.py" in cmds[2]
  assert "--config.model.num_classes=2" in cmds[2] and "--config.select_metric=auroc" in cmds[2]
  assert not (tmp_path / "sw").exists()
  for flag, needle in [("--grid=model.c_layer=3", "'model.c_layer' is not a config field"),
                       ("--seeds=0,zero", "--seeds=0,zero: 'zero' is not an integer"),
                       ("--parallel=0", "--parallel=0: must be >= 1")]:
    bad = subprocess.run(sweep_cmd(tmp_path / "sw", *common, flag, "--dry_run",
                                   configs_dir=configs_dir),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and needle in bad.stderr, (flag, bad.stderr[-2000:])


# -- summary --------------------------------------------------------------------------------------

def hand_row(setting, seed, val_kappa, test, status="finished"):
  row = {"dataset": "tuev", "setting": setting, "seed": seed, "hparams": {"lr": setting[3:]},
         "status": status, "num_classes": 6, "paper_key": "tuev", "select_metric": "cohen_kappa",
         "workdir": f"runs/tuev/{setting}/seed{seed}", "plots": []}
  if status == "finished":
    row["validation"] = {"cohen_kappa": val_kappa, "balanced_accuracy": 0.99}
    row["test"] = dict(zip(("balanced_accuracy", "cohen_kappa", "weighted_f1"), test))
    row["checkpoint"] = f"/x/runs/tuev/{setting}/seed{seed}/best/3"
  else:
    row["error"] = {"reason": "exit code 1", "stderr_tail": "boom\nValueError: bad"}
  return row


def test_summary_mean_std_and_best_on_validation(tmp_path):
  # lr=1 has the better test scores, lr=2 the better validation kappa: lr=2 must be chosen.
  rows = [hand_row("lr=1", 0, 0.40, (0.70, 0.60, 0.80)),
          hand_row("lr=1", 1, 0.42, (0.72, 0.64, 0.81)),
          hand_row("lr=2", 0, 0.50, (0.50, 0.40, 0.60)),
          hand_row("lr=2", 1, 0.52, (0.54, 0.41, 0.62)),
          hand_row("lr=2", 2, 0.51, (0.55, 0.45, 0.66)),
          hand_row("lr=2", 3, None, None, status="failed")]
  rows[0]["plots"] = ["runs/tuev/lr=1/seed0/confusion_matrix.png"]
  md_path, csv_path = summary.write_summary(rows, str(tmp_path))
  md = open(md_path).read()
  bacc = [0.50, 0.54, 0.55]
  want = f"{np.mean(bacc):.4f}±{np.std(bacc, ddof=1):.4f}"
  best_line = next(ln for ln in md.splitlines() if ln.startswith("| tuev |"))
  assert "| lr=2 | 3 | " + want in best_line
  assert "0.6761±0.0133 | 0.6970±0.0185 | 0.8428±0.0089" in best_line   # paper, TUEV table
  assert "Balanced Acc / Cohen's Kappa / Weighted F1" in best_line
  assert "| **lr=2** (best) | 0,1,2 | 0.5100±0.0100 | " + want in md
  assert ("| lr=1 | 0,1 | 0.4100±0.0141 | 0.7100±0.0141 | 0.6200±0.0283 | 0.8050±0.0071 "
          "| 0 / 0 |") in md
  assert "[confusion_matrix](runs/tuev/lr=1/seed0/confusion_matrix.png)" in md
  assert "exit code 1: ValueError: bad" in md
  with open(csv_path) as f:
    table = {r["setting"]: r for r in csv.DictReader(f)}
  assert table["lr=2"]["best"] == "1" and table["lr=1"]["best"] == "0"
  assert float(table["lr=2"]["test_balanced_accuracy_mean"]) == pytest.approx(np.mean(bacc))
  assert float(table["lr=2"]["test_balanced_accuracy_std"]) == pytest.approx(
      np.std(bacc, ddof=1), abs=1e-6)
  assert table["lr=2"]["failed"] == "1" and table["lr=2"]["seeds"] == "0;1;2"
  assert table["lr=2"]["paper_cohen_kappa_mean"] == "0.697"
  assert table["lr=2"]["paper_auroc_mean"] == ""
  assert float(table["lr=1"]["val_select_mean"]) == pytest.approx(0.41)


# -- execution with the fake program --------------------------------------------------------------

def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
  data = write_manifest(tmp_path / "tuab", "tuab", ["normal", "abnormal"])
  wd = tmp_path / "sw"
  res = subprocess.run(sweep_cmd(wd, "--datasets=tuab", f"--data=tuab={data}", "--seeds=0,1,2",
                                 f"--program={FAKE}", "--parallel=2", "--devices_per_run=2"),
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=fake_env(FAKE_FAIL="seed1", CUDA_VISIBLE_DEVICES="4,5,6,7"))
  assert res.returncode == 1, res.stderr[-3000:]
  assert "failed: tuab/default/seed1" in res.stdout
  rows = read_rows(wd)
  assert [(r["seed"], r["status"]) for r in rows] == [(0, "finished"), (1, "failed"),
                                                      (2, "finished")]
  err = rows[1]["error"]
  assert err["exit_code"] == 3 and "ValueError: fake failure" in err["stderr_tail"]
  assert rows[1]["select_metric"] == "auroc" and rows[1]["config"] == rows[0]["config"]
  assert rows[0]["test"]["auroc"] == pytest.approx(0.6) and rows[0]["select_metric"] == "auroc"
  assert rows[2]["plots"] == ["runs/tuab/default/seed2/curves.png"]
  # The resolved config written beside each run is what its command resolves to.
  written = json.load(open(wd / rows[2]["workdir"] / records.RUN_CONFIG))
  assert (written["seed"], written["model"]["num_classes"]) == (2, 2)
  assert written["data"]["sources"] == [[os.path.realpath(data), 1.0]]
  # Two slots of two GPUs each: seed0 in slot 0, seed1 in slot 1, seed2 in whichever came free.
  seen = [json.load(open(wd / rows[k]["workdir"] / "results.json"))["visible_devices"]
          for k in (0, 2)]
  assert seen[0] == "4,5" and seen[1] in ("4,5", "6,7")
  assert json.load(open(wd / rows[1]["workdir"] / records.RUN_RECORD))["devices"] == "6,7"
  md = (wd / "summary.md").read_text()
  assert "Balanced Acc / AUC-PR / AUROC" in md and "0.8293±0.0016" in md   # TUAB, paper
  assert "| **default** (best) | 0,2 | 0.5100±0.0141 |" in md
  # Rerun without the failure: only the failed run runs again.
  res = subprocess.run(sweep_cmd(wd, "--datasets=tuab", f"--data=tuab={data}", "--seeds=0,1,2",
                                 f"--program={FAKE}"),
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=fake_env(FAKE_LOG=tmp_path / "log"))
  assert res.returncode == 0, res.stdout + res.stderr[-3000:]
  assert (tmp_path / "log").read_text().split() == ["start", str(wd / "runs/tuab/default/seed1"),
                                                    "finish", str(wd / "runs/tuab/default/seed1")]
  assert [r["status"] for r in read_rows(wd)] == ["finished"] * 3
  # --summarize_only's rebuild from the run folders gives the same files.
  before = {n: (wd / n).read_text() for n in ("results.jsonl", "summary.md", "summary.csv")}
  for n in before:
    (wd / n).unlink()
  records.refresh(str(wd))
  assert {n: (wd / n).read_text() for n in before} == before


def test_resume_after_sigkill(tmp_path):
  data = write_manifest(tmp_path / "tuev")
  wd, log = tmp_path / "sw", tmp_path / "log"
  cmd = sweep_cmd(wd, "--datasets=tuev", f"--data=tuev={data}", "--seeds=0,1",
                  "--grid=optim.lr=1e-5,5e-6", f"--program={FAKE}")
  held = str(wd / "runs/tuev/optim.lr=1e-5/seed1")   # the second run: it never ends by itself
  pid_file = os.path.join(held, "fake_finetune.pid")
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=fake_env(FAKE_LOG=log, FAKE_HOLD="optim.lr=1e-5/seed1"))
  wait_for(lambda: os.path.exists(pid_file) and log.exists()
           and log.read_text().count("start") == 2, "the sweep's second run", proc)
  pid = int(open(pid_file).read())
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  try:   # PR_SET_PDEATHSIG: the held run dies with the sweep, it is not left as an orphan
    wait_for(lambda: not alive(pid), f"run pid {pid} to die with the sweep", timeout=60)
  finally:
    if alive(pid):
      os.kill(pid, signal.SIGKILL)
  first = log.read_text().splitlines()
  assert [ln.split()[0] for ln in first] == ["start", "finish", "start"], first
  assert not os.path.exists(os.path.join(held, "results.json"))
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=fake_env(FAKE_LOG=log))
  assert res.returncode == 0, res.stderr[-3000:]
  lines = [ln.split() for ln in log.read_text().splitlines()]
  finished = [w for what, w in lines if what == "finish"]
  assert sorted(finished) == sorted(str(wd / "runs/tuev" / s / f"seed{k}")
                                    for s in ("optim.lr=1e-5", "optim.lr=5e-6") for k in (0, 1))
  starts = [w for what, w in lines if what == "start"]
  assert starts.count(finished[0]) == 1          # finished before the kill: not rerun
  assert starts.count(held) == 2                 # interrupted: restarted once
  assert all(what != "already" for what, _ in lines)
  rows = read_rows(wd)
  assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
  record = json.load(open(os.path.join(held, records.RUN_RECORD)))
  assert record["attempts"] == 2 and record["status"] == "finished"


def test_sigterm_stops_the_sweep_and_a_rerun_completes(tmp_path):
  data = write_manifest(tmp_path / "tuev")
  wd, log = tmp_path / "sw", tmp_path / "log"
  cmd = sweep_cmd(wd, "--datasets=tuev", f"--data=tuev={data}", "--seeds=0,1,2",
                  f"--program={FAKE}")
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=fake_env(FAKE_LOG=log, FAKE_HOLD="seed0"))
  pid_file = wd / "runs/tuev/default/seed0/fake_finetune.pid"
  wait_for(pid_file.exists, "the first run to start", proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 1, err[-3000:]
  assert "interrupted: tuev/default/seed0" in out and "not started: tuev/default/seed2" in out
  assert not alive(int(pid_file.read_text()))
  assert [r["status"] for r in read_rows(wd)] == ["interrupted"]   # the others never started
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=fake_env(FAKE_LOG=log))
  assert res.returncode == 0, res.stderr[-3000:]
  assert [r["status"] for r in read_rows(wd)] == ["finished"] * 3


def test_run_locked_by_another_process_is_not_started(tmp_path):
  import fcntl
  data = write_manifest(tmp_path / "tuev")
  wd, log = tmp_path / "sw", tmp_path / "log"
  busy = wd / "runs/tuev/default/seed1"
  busy.mkdir(parents=True)
  with open(busy / records.RUN_LOCK, "w") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    res = subprocess.run(sweep_cmd(wd, "--datasets=tuev", f"--data=tuev={data}", "--seeds=0,1",
                                   f"--program={FAKE}"),
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=fake_env(FAKE_LOG=log))
  assert res.returncode == 1 and "running: tuev/default/seed1" in res.stdout, res.stdout
  assert log.read_text().split() == ["start", str(wd / "runs/tuev/default/seed0"),
                                     "finish", str(wd / "runs/tuev/default/seed0")]


# -- the real thing -------------------------------------------------------------------------------

def test_tiny_sweep_through_finetune(shards, tmp_path):  # noqa: F811
  wd = tmp_path / "sw"
  # 6 steps: a warm-up of 0.5 x 6 steps (at least one step, as train.validate requires).
  sets = [f"--set={a[len('--config.'):]}" for a in MODEL + RUN] + ["--set=optim.pct_start=0.5"]
  res = subprocess.run(sweep_cmd(wd, "--datasets=synth", f"--data=synth={shards}",
                                 "--seeds=0,1", "--grid=optim.lr=1e-3", "--set=init_from=",
                                 "--parallel=2", *sets),
                       cwd=REPO, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stdout + res.stderr[-4000:]
  rows = read_rows(wd)
  assert [(r["seed"], r["status"]) for r in rows] == [(0, "finished"), (1, "finished")]
  for r in rows:
    assert r["overrides"]["model.data"] == "Stage1" and r["select_metric"] == "cohen_kappa"
    assert r["overrides"]["model.num_classes"] == "4"
    run = json.load(open(wd / r["workdir"] / "results.json"))
    assert r["test"]["cohen_kappa"] == run["test"]["cohen_kappa"]
    assert r["checkpoint"] == run["checkpoint"] and os.path.isdir(r["checkpoint"])
  assert rows[0]["test"] != rows[1]["test"] or rows[0]["validation"] != rows[1]["validation"]
  md = (wd / "summary.md").read_text()
  bacc = [r["test"]["balanced_accuracy"] for r in rows]
  want = f"{np.mean(bacc):.4f}±{np.std(bacc, ddof=1):.4f}"
  assert (f"| synth | Balanced Acc / Cohen's Kappa / Weighted F1 | optim.lr=1e-3 | 2 | {want} |"
          in md)
  with open(wd / "summary.csv") as f:
    (line,) = list(csv.DictReader(f))
  assert line["best"] == "1" and line["seeds"] == "0;1" and line["select_metric"] == "cohen_kappa"
  kappa = [r["validation"]["cohen_kappa"] for r in rows]
  assert float(line["val_select_mean"]) == pytest.approx(np.mean(kappa), abs=1e-5)
  # A rerun finds every run finished and runs nothing.
  again = subprocess.run(sweep_cmd(wd, "--datasets=synth", f"--data=synth={shards}",
                                   "--seeds=0,1", "--grid=optim.lr=1e-3", "--set=init_from=",
                                   *sets),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "2 already done or skipped, 0 to run" in again.stdout
