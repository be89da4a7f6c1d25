"""launch.sweep: grid parsing and its errors, shard assignment, dataset settings from the
manifest, dry run, summary mean ± std and best-on-validation on hand-made results, a failing
run recorded without stopping the sweep, resume after SIGKILL (with tests.fake_finetune), and
one real tiny sweep through launch.finetune checked in summary.md / summary.csv."""

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
from neuript_jax.evaluation import sweep, sweep_summary
from tests.conftest import REPO
from tests.test_finetune import MODEL, RUN, env, shards  # noqa: F401  (shards: fixture)

FAKE = "tests.fake_finetune"
TUEV_LABELS = ["spsw", "gped", "pled", "eyem", "artf", "bckg"]


@pytest.fixture(scope="module")
def base():
  return sweep.load_base_config(os.path.join(REPO, sweep.DEFAULT_BASE_CONFIG))


def write_manifest(path, recipe="tuev", labels=TUEV_LABELS, channels=geometry.TCP20,
                   window=320):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "manifest.json"), "w") as f:
    json.dump({"recipe": {"name": recipe, "config": {"label_names": list(labels)}},
               "window_samples": window, "channels": list(channels) if channels else None,
               "montage": "standard_1020"}, f)
  return str(path)


def sweep_cmd(workdir, *extra):
  return [sys.executable, "-m", "launch.sweep", f"--workdir={workdir}", *extra]


def fake_env(**kw):
  e = dict(os.environ)
  e.update({k: str(v) for k, v in kw.items()})
  return e


def read_rows(workdir):
  return sweep.read_results_jsonl(os.path.join(workdir, "results.jsonl"))


# -- grid -----------------------------------------------------------------------------------------

def test_grid_short_names_full_paths_and_tuples(base):
  axes = sweep.parse_grid("lr=1e-5,5e-6; model.c_layers=3,6;merge_layers=(1,2,2),(1,1,2)", base)
  assert [(a.name, a.path) for a in axes] == [
      ("lr", "optim.lr"), ("model.c_layers", "model.c_layers"),
      ("merge_layers", "model.merge_layers")]
  assert axes[2].values == ("(1,2,2)", "(1,1,2)")
  names = [n for n, _ in sweep.settings(axes)]
  assert len(names) == 8 and len(set(names)) == 8
  assert names[0] == "lr=1e-5,model.c_layers=3,merge_layers=1-2-2"
  assert sweep.settings([]) == [("default", {})]


@pytest.mark.parametrize("grid,needle", [
    ("lrr=1e-5", "'lrr'"),
    ("c_layers=3,three", "'c_layers': value 'three' is not a valid int"),
    ("lr", "--grid entry 'lr'"),
    ("lr=1e-5;optim.lr=2e-5", "'lr' and 'optim.lr' both set optim.lr"),
    ("optim=1", "'optim' (optim) is a group of fields"),
    ("seed=1,2", "'seed' cannot be swept"),
    ("dropout=0.1,", "grid key 'dropout': empty value"),
    ("merge_layers=(1,2", "'merge_layers': value '(1,2' is not a valid tuple"),
    ("model.no_such=1", "no 'model.no_such'"),
])
def test_bad_grid_errors_name_the_key(base, grid, needle):
  with pytest.raises(sweep.SweepError, match=None) as e:
    sweep.parse_grid(grid, base)
  assert needle in str(e.value), str(e.value)


def test_grid_file_json_and_py(base, tmp_path):
  (tmp_path / "g.json").write_text(json.dumps({"lr": [1e-5, 5e-6],
                                               "merge_layers": [[1, 2, 2]]}))
  (tmp_path / "g.py").write_text("GRID = {'c_layers': [3, 6], 'async_checkpoint': [False]}\n")
  a = sweep.load_grid_file(str(tmp_path / "g.json"), base)
  assert [x.values for x in a] == [("1e-05", "5e-06"), ("(1, 2, 2)",)]
  b = sweep.load_grid_file(str(tmp_path / "g.py"), base)
  assert [x.values for x in b] == [("3", "6"), ("false",)]
  (tmp_path / "bad.json").write_text(json.dumps({"c_layers": 3}))
  with pytest.raises(sweep.SweepError, match="key 'c_layers' needs a list"):
    sweep.load_grid_file(str(tmp_path / "bad.json"), base)


# -- plan -----------------------------------------------------------------------------------------

def test_datasets_from_manifests_and_overrides(base, tmp_path):
  tuev = write_manifest(tmp_path / "tuev")
  tuab = write_manifest(tmp_path / "tuab", "tuab", ["normal", "abnormal"], window=640)
  other = write_manifest(tmp_path / "mine", "generic", ["a", "b", "c"], ("C3", "Cz", "Pz"), 64)
  d = sweep.resolve_datasets(["tuev", "tuab", "mine"], {"mine": other}, str(tmp_path))
  assert d[0].overrides["model.data"] == "TUEV" and d[0].paper_key == "tuev"
  assert d[0].overrides["model.num_classes"] == "6" and d[0].overrides["model.T"] == "320"
  assert d[0].overrides["select_metric"] == "cohen_kappa"
  assert d[1].overrides["select_metric"] == "auroc" and d[1].task == "binary"
  assert ast.literal_eval(d[1].overrides["data.sources"]) == ((os.path.realpath(tuab), 1.0),)
  assert d[2].overrides["model.channels"] == "('C3', 'Cz', 'Pz')" and d[2].paper_key is None
  sets = sweep.parse_sets(["lr=1e-4", "tuev:lr=2e-4", "window_len=64"], base,
                          ["tuev", "tuab", "mine"])
  axes = sweep.parse_grid("c_layers=3", base)
  runs = sweep.plan(d, axes, [0, 1], sets, str(tmp_path / "sw"))
  assert len(runs) == 6
  o = runs[0].overrides
  assert (o["optim.lr"], o["model.T"], o["model.c_layers"], o["seed"]) == ("2e-4", "64", "3", "0")
  assert runs[2].overrides["optim.lr"] == "1e-4"
  cmd = sweep.command(runs[0], "cfg.py")
  assert cmd[1:5] == ["-m", "launch.finetune", "--config=cfg.py",
                      f"--workdir={tmp_path}/sw/runs/tuev/c_layers=3/seed0"]
  assert "--config.model.data=TUEV" in cmd and "--config.seed=0" in cmd
  with pytest.raises(sweep.SweepError, match="dataset 'nope': no .*manifest.json"):
    sweep.resolve_datasets(["nope"], {}, str(tmp_path))
  with pytest.raises(sweep.SweepError, match="--set 'x:lr=1': dataset 'x' is not in"):
    sweep.parse_sets(["x:lr=1"], base, ["tuev"])
  unlabelled = write_manifest(tmp_path / "u", "pretrain_tcp20", [])
  with pytest.raises(sweep.SweepError, match="'u'.*0 label_names"):
    sweep.load_dataset("u", unlabelled)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_cover_every_run_exactly_once(base, tmp_path, n):
  d = [sweep.load_dataset("tuev", write_manifest(tmp_path / "tuev")),
       sweep.load_dataset("tuab", write_manifest(tmp_path / "tuab", "tuab", ["n", "a"]))]
  runs = sweep.plan(d, sweep.parse_grid("lr=1e-5,5e-6;c_layers=3,6,4", base), [0, 1, 2], {},
                    str(tmp_path))
  assert len(runs) == 36
  shares = [sweep.shard_runs(runs, i, n) for i in range(n)]
  ids = [r.run_id for s in shares for r in s]
  assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == 36
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  again = sweep.plan(d, sweep.parse_grid("lr=1e-5,5e-6;c_layers=3,6,4", base), [0, 1, 2], {},
                     str(tmp_path))
  assert [r.run_id for r in sweep.shard_runs(again, n - 1, n)] == [r.run_id for r in shares[-1]]
  for bad in ("2/2", "1", "-1/2", "a/b"):
    with pytest.raises(sweep.SweepError, match="--shard"):
      sweep.parse_shard(bad)


def test_dry_run_prints_commands(tmp_path):
  data = write_manifest(tmp_path / "tuev")
  res = subprocess.run(sweep_cmd(tmp_path / "sw", "--datasets=tuev", f"--data=tuev={data}",
                                 "--seeds=0,1", "--grid=lr=1e-5,5e-6", "--shard=1/2",
                                 "--dry_run"),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  assert lines[0] == "# 4 runs in the sweep, 2 in shard 1/2"
  assert len(lines) == 3 and all("-m launch.finetune" in ln for ln in lines[1:])
  assert "lr=1e-5/seed1" in lines[1] and "--config.optim.lr=1e-5" in lines[1]
  assert "lr=5e-6/seed1" in lines[2] and "--config.seed=1" in lines[2]
  assert not (tmp_path / "sw").exists()
  bad = subprocess.run(sweep_cmd(tmp_path / "sw", "--datasets=tuev", f"--data=tuev={data}",
                                 "--grid=c_layer=3", "--dry_run"),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "'c_layer' is neither a short name" in bad.stderr


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
  md_path, csv_path = sweep_summary.write_summary(rows, str(tmp_path))
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
  assert rows[0]["test"]["auroc"] == pytest.approx(0.6) and rows[0]["select_metric"] == "auroc"
  assert rows[2]["plots"] == ["runs/tuab/default/seed2/curves.png"]
  # Two slots of two GPUs each: seed0 in slot 0, seed1 in slot 1, seed2 in whichever came free.
  seen = [json.load(open(wd / rows[k]["workdir"] / "results.json"))["visible_devices"]
          for k in (0, 2)]
  assert seen[0] == "4,5" and seen[1] in ("4,5", "6,7")
  assert json.load(open(wd / rows[1]["workdir"] / sweep.RUN_RECORD))["devices"] == "6,7"
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
  sweep.refresh(str(wd))
  assert {n: (wd / n).read_text() for n in before} == before


def test_resume_after_sigkill(tmp_path):
  data = write_manifest(tmp_path / "tuev")
  wd, log = tmp_path / "sw", tmp_path / "log"
  cmd = sweep_cmd(wd, "--datasets=tuev", f"--data=tuev={data}", "--seeds=0,1",
                  "--grid=lr=1e-5,5e-6", f"--program={FAKE}")
  e = fake_env(FAKE_LOG=log, FAKE_SECONDS=1.5)
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=e)
  start = time.time()
  # Kill the sweep while its second run is running (one finished, one started).
  while not (log.exists() and log.read_text().count("finish") == 1
             and log.read_text().count("start") == 2):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < 120, "the sweep did not reach its second run"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  time.sleep(2.0)   # an orphaned run would finish in this time; it must have died with the sweep
  first = log.read_text().split("\n")
  assert sum(ln.startswith("finish") for ln in first) == 1, first
  interrupted = [ln.split()[1] for ln in first if ln.startswith("start")][1]
  assert not os.path.exists(os.path.join(interrupted, "results.json"))
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=e)
  assert res.returncode == 0, res.stderr[-3000:]
  lines = [ln.split() for ln in log.read_text().splitlines()]
  finished = [w for what, w in lines if what == "finish"]
  assert sorted(finished) == sorted(str(wd / "runs/tuev" / s / f"seed{k}")
                                    for s in ("lr=1e-5", "lr=5e-6") for k in (0, 1))
  starts = [w for what, w in lines if what == "start"]
  assert starts.count(finished[0]) == 1          # finished before the kill: not rerun
  assert starts.count(interrupted) == 2          # interrupted: restarted once
  assert all(what != "already" for what, _ in lines)
  rows = read_rows(wd)
  assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
  record = json.load(open(os.path.join(interrupted, sweep.RUN_RECORD)))
  assert record["attempts"] == 2 and record["status"] == "finished"


def test_sigterm_stops_the_sweep_and_a_rerun_completes(tmp_path):
  data = write_manifest(tmp_path / "tuev")
  wd, log = tmp_path / "sw", tmp_path / "log"
  cmd = sweep_cmd(wd, "--datasets=tuev", f"--data=tuev={data}", "--seeds=0,1,2",
                  f"--program={FAKE}")
  e = fake_env(FAKE_LOG=log, FAKE_SECONDS=30)
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=e)
  start = time.time()
  while not (log.exists() and "start" in log.read_text()):
    assert proc.poll() is None and time.time() - start < 120
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 1, err[-3000:]
  assert "interrupted: tuev/default/seed0" in out and "not started: tuev/default/seed2" in out
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
  with open(busy / sweep.RUN_LOCK, "w") as held:
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
  sets = [f"--set={a[len('--config.'):]}" for a in MODEL + RUN]
  res = subprocess.run(sweep_cmd(wd, "--datasets=synth", f"--data=synth={shards}",
                                 "--seeds=0,1", "--grid=lr=1e-3", "--set=init_from=",
                                 "--parallel=2", *sets),
                       cwd=REPO, capture_output=True, text=True, timeout=900, env=env())
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
  assert f"| synth | Balanced Acc / Cohen's Kappa / Weighted F1 | lr=1e-3 | 2 | {want} |" in md
  with open(wd / "summary.csv") as f:
    (line,) = list(csv.DictReader(f))
  assert line["best"] == "1" and line["seeds"] == "0;1" and line["select_metric"] == "cohen_kappa"
  kappa = [r["validation"]["cohen_kappa"] for r in rows]
  assert float(line["val_select_mean"]) == pytest.approx(np.mean(kappa), abs=1e-5)
  # A rerun finds every run finished and runs nothing.
  again = subprocess.run(sweep_cmd(wd, "--datasets=synth", f"--data=synth={shards}",
                                   "--seeds=0,1", "--grid=lr=1e-3", "--set=init_from=", *sets),
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=env())
  assert again.returncode == 0 and "2 already done or skipped, 0 to run" in again.stdout
