"""Sweeps: an interrupted sweep resumes without redoing finished stages; printed commands build the same
config the sweep runs; matching by parameters and by FLOPs lands within the tolerance."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vlfusion.analysis import sweep as sweep_lib
from vlfusion.training import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One joint layer of width 32, a few steps: the stages' point is the bookkeeping, not the model.
SMALL = {"model.fusion_layers": 1, "model.text.hidden_size": 32, "model.image.hidden_size": 32,
         "model.text.mlp_dim": 64, "model.image.mlp_dim": 64, "data.global_batch_size": 8,
         "eval.batch_size": 64, "train.log_every_steps": 2, "train.checkpoint_every_steps": 2,
         "eval.every_steps": 4, "optimizer.warmup_steps": 1}


def _write_sweep(tmp_path, body):
  path = tmp_path / "sweep_file.py"
  path.write_text(textwrap.dedent(body))
  return str(path)


def _resume_sweep(tmp_path, data_dir):
  return _write_sweep(tmp_path, f"""
      SMALL = {SMALL!r}
      def get_sweep():
        return {{
            "stages": [
                {{"name": "pre", "config": "configs/pretrain/single_stream.py:tiny", "evaluate": False,
                  "overrides": {{**SMALL, "train.num_steps": 4, "data.data_dir": {data_dir!r},
                                "eval.every_steps": 0}}}},
                {{"name": "cont", "config": "configs/pretrain/single_stream.py:tiny", "init_from": "pre",
                  "overrides": {{**SMALL, "train.num_steps": 4, "data.data_dir": {data_dir!r},
                                "optimizer.learning_rate": 5e-4}}}},
            ],
            "axes": {{"seed": {{"s0": {{"train.seed": 0}}}}}},
        }}
  """)


class RecordingLauncher(sweep_lib.InProcessLauncher):
  """The in-process launcher, recording each stage it trains and the checkpoints it found there."""

  def __init__(self):
    self.trained = []

  def train(self, run):
    found = sorted(os.listdir(os.path.join(run.workdir, "checkpoints"))) if os.path.isdir(
        os.path.join(run.workdir, "checkpoints")) else []
    self.trained.append((run.label, found))
    super().train(run)


def test_interrupted_sweep_resumes_without_redoing_finished_stages(tmp_path, data_dir, monkeypatch):
  path = _resume_sweep(tmp_path, data_dir)
  root = str(tmp_path / "root")
  sweep = sweep_lib.load_sweep(path)

  # Interrupt the second stage during its step 3 (after its checkpoint of step 2), as Ctrl-C would.
  real_batches = trainer.train_batches

  def interrupted_batches(source, start, setup):
    batches = real_batches(source, start, setup)
    if setup.config.init.checkpoint:  # the second stage: it starts from the first one.

      class Interrupt:
        step = start

        def __next__(self):
          self.step += 1
          if self.step == 3:
            raise KeyboardInterrupt
          return next(batches)

        def close(self):
          batches.close()

      return Interrupt()
    return batches

  monkeypatch.setattr(trainer, "train_batches", interrupted_batches)
  first = RecordingLauncher()
  with pytest.raises(KeyboardInterrupt):
    sweep_lib.run(sweep, root, first, log=lambda _: None)
  monkeypatch.setattr(trainer, "train_batches", real_batches)
  pre, cont = os.path.join(root, "s0", "pre"), os.path.join(root, "s0", "cont")
  assert [label for label, _ in first.trained] == ["s0/pre", "s0/cont"]
  assert os.path.isfile(os.path.join(pre, sweep_lib.MARKER))  # finished: the marker, from the workdir alone.
  assert not os.path.isfile(os.path.join(cont, sweep_lib.MARKER))
  assert sweep_lib.stage_complete(pre, evaluate=False) and not os.path.isdir(os.path.join(pre, "eval"))
  assert not sweep_lib.stage_complete(cont, evaluate=False)
  marker_time = os.path.getmtime(os.path.join(pre, sweep_lib.MARKER))
  pre_files = sorted(os.listdir(os.path.join(pre, "checkpoints")))

  second = RecordingLauncher()
  sweep_lib.run(sweep, root, second, log=lambda _: None)
  # Only the interrupted stage ran again, from its step-2 checkpoint; the finished one is untouched.
  assert second.trained == [("s0/cont", ["2"])]
  assert os.path.getmtime(os.path.join(pre, sweep_lib.MARKER)) == marker_time
  assert sorted(os.listdir(os.path.join(pre, "checkpoints"))) == pre_files
  assert sweep_lib.stage_complete(cont) and os.path.isfile(os.path.join(cont, sweep_lib.MARKER))
  with open(os.path.join(cont, "init_report.json")) as f:
    assert json.load(f)["restored"]  # the second stage started from the first one's parameters.
  with open(os.path.join(cont, sweep_lib.MARKER)) as f:
    marker = json.load(f)
  assert (marker["final_step"], marker["stage"], marker["group"]) == (4, "cont", "base")

  third = RecordingLauncher()
  sweep_lib.run(sweep, root, third, log=lambda _: None)
  assert third.trained == []  # everything finished: nothing runs.

  # A changed sweep does not silently reuse a workdir trained with another config.
  changed = _write_sweep(tmp_path, open(path).read().replace('"optimizer.learning_rate": 5e-4',
                                                             '"optimizer.learning_rate": 1e-4'))
  with pytest.raises(sweep_lib.SweepError, match="optimizer.learning_rate"):
    sweep_lib.run(sweep_lib.load_sweep(changed), root, RecordingLauncher(), log=lambda _: None)


def test_printed_commands_build_the_config_the_sweep_runs(tmp_path, data_dir, capsys):
  """train.py's flag parsing of each printed line gives the config the sweep itself builds."""
  path = _resume_sweep(tmp_path, data_dir)
  sweep_lib.main([f"--sweep={path}", f"--root={tmp_path / 'root'}", "--print_commands"])
  lines = capsys.readouterr().out.strip().splitlines()
  runs = sweep_lib.plan(sweep_lib.load_sweep(path), str(tmp_path / "root"))
  assert lines == sweep_lib.commands(runs)
  assert os.path.isfile(tmp_path / "root" / sweep_lib.PLAN) and not os.path.isdir(tmp_path / "root" / "s0")
  assert lines[0] == "# s0/pre" and lines[1].startswith("python train.py --config=configs/pretrain/")
  assert sum(line.startswith("python eval.py") for line in lines) == 1  # "pre" is not evaluated.
  script = textwrap.dedent("""
      import json, sys
      from absl import flags
      from ml_collections import config_flags
      from vlfusion import configuration
      config = config_flags.DEFINE_config_file("config", None, "", lock_config=True)
      flags.DEFINE_string("workdir", None, "")
      flags.FLAGS(sys.argv)
      print(json.dumps(configuration.to_json(config.value)))
  """)
  for run in runs:
    out = subprocess.run([sys.executable, "-c", script, *run.train_argv()[1:]], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == sweep_lib.configuration.to_json(run.config())
    assert run.overrides.get("init.checkpoint", "").endswith("s0/pre") == (run.stage.name == "cont")


def _match_sweep(tmp_path, by, target="deep"):
  return sweep_lib.load_sweep(_write_sweep(tmp_path, f"""
      def get_sweep():
        return {{
            "stages": [{{"name": "pre", "config": "configs/pretrain/single_stream.py:tiny"}}],
            "axes": {{"depth": {{"deep": {{"model.fusion_layers": 3}},
                               "shallow": {{"model.fusion_layers": 1}}}},
                     "seed": {{"s0": {{"train.seed": 0}}, "s1": {{"train.seed": 1}}}}}},
            "match": {{"by": {by!r}, "target": {target!r}, "tolerance": 0.02,
                      "scale": [{{"fields": {{"model.text.mlp_dim": 1, "model.image.mlp_dim": 1}}}}]}},
        }}
  """))


@pytest.mark.parametrize("by", ["params", "flops"])
def test_matching_solves_the_scaled_width_within_tolerance(tmp_path, by):
  """The shallow variant's MLP is widened until its count (the model table's) is within 2% of the deep
  one's; both seeds share the solution."""
  sweep = _match_sweep(tmp_path, by)
  runs = sweep_lib.plan(sweep, str(tmp_path / "root"))
  shallow = [r for r in runs if r.variant.group == "shallow"]
  deep = [r for r in runs if r.variant.group == "deep"]
  assert len(shallow) == len(deep) == 2
  target = shallow[0].variant.count["target"]
  if by == "params":  # the reference's own count (a FLOPs count costs a compile: trust the solver's).
    assert target == sweep_lib.count_of(deep[0].config(), by)
  mlp = shallow[0].overrides["model.text.mlp_dim"]
  assert mlp == shallow[1].overrides["model.text.mlp_dim"] == shallow[0].overrides["model.image.mlp_dim"]
  assert mlp > 2 * 128  # one layer standing in for three needs a much wider MLP.
  achieved = sweep_lib.count_of(shallow[0].config(), by)
  assert abs(achieved / target - 1) <= 0.02
  assert shallow[0].variant.count == {by: achieved, "target": target}
  assert deep[0].variant.matched == {} and "model.text.mlp_dim" not in deep[0].overrides
  # The nearest integer width: one unit either way is no closer to the target.
  if by == "params":
    for other in (mlp - 1, mlp + 1):
      config = sweep_lib.build_config(shallow[0].stage.config, {
          **shallow[0].overrides, "model.text.mlp_dim": other, "model.image.mlp_dim": other})
      assert abs(sweep_lib.count_of(config, by) - target) >= abs(achieved - target)


def test_matching_refuses_what_it_cannot_reach_or_scale(tmp_path):
  sweep = _match_sweep(tmp_path, "params", target=1e9)
  sweep.match["scale"][0]["max"] = 512
  with pytest.raises(sweep_lib.SweepError, match="beyond match.tolerance"):
    sweep_lib.plan(sweep, str(tmp_path / "a"))
  sweep = _match_sweep(tmp_path, "params")
  sweep.match["scale"] = [{"fields": {"model.cross.hidden_size": 1}}]  # single_stream has no cross.
  with pytest.raises(sweep_lib.ConfigError, match="config.model.cross.hidden_size"):
    sweep_lib.plan(sweep, str(tmp_path / "b"))


def test_sweep_files_refuse_unknown_keys_and_mismatched_stages(tmp_path):
  with pytest.raises(sweep_lib.SweepError, match="unknown keys \\['stage'\\]"):
    sweep_lib.load_sweep(_write_sweep(tmp_path, """
        def get_sweep():
          return {"stage": []}
    """))
  # A fine-tuning stage whose model differs from its checkpoint's (the VQA recipe's pixel model) is
  # refused before anything runs.
  sweep = sweep_lib.load_sweep(_write_sweep(tmp_path, """
      def get_sweep():
        return {"stages": [
            {"name": "pre", "config": "configs/pretrain/co_attention.py:tiny"},
            {"name": "vqa", "config": "configs/finetune/vqa.py:tiny,family=co_attention",
             "init_from": "pre"}]}
  """))
  with pytest.raises(sweep_lib.SweepError, match="model.image.input: 'regions' vs 'patches'"):
    sweep_lib.plan(sweep, str(tmp_path / "root"))


def test_the_fusion_ablation_plans(tmp_path):
  """configs/sweeps/fusion_ablation.py: seven families x three seeds, pretraining then VQA from it."""
  sweep = sweep_lib.load_sweep(os.path.join(ROOT, "configs", "sweeps", "fusion_ablation.py"))
  variants = sweep_lib.variants(sweep)
  assert len({v.group for v in variants}) == 7 and len(variants) == 21
  assert [s.name for s in sweep.stages] == ["pretrain", "vqa"] and sweep.stages[1].init_from == "pretrain"


def test_printed_commands_refuse_a_plan_whose_overrides_changed(tmp_path, data_dir):
  """--print_commands rewrites sweep.json only for a plan its runs were started with, as a sweep run does."""
  path = _resume_sweep(tmp_path, data_dir)
  root = str(tmp_path / "root")
  runs = sweep_lib.plan(sweep_lib.load_sweep(path), root)
  os.makedirs(runs[1].workdir)
  with open(os.path.join(runs[1].workdir, "config.json"), "w") as f:
    f.write(sweep_lib.configuration.to_json(runs[1].config()))  # the run started from the printed lines.
  sweep_lib.main([f"--sweep={path}", f"--root={root}", "--print_commands"])  # the same plan: fine.
  with open(os.path.join(root, sweep_lib.PLAN)) as f:
    before = f.read()
  changed = _write_sweep(tmp_path, open(path).read().replace('"optimizer.learning_rate": 5e-4',
                                                             '"optimizer.learning_rate": 1e-4'))
  with pytest.raises(SystemExit, match="optimizer.learning_rate"):
    sweep_lib.main([f"--sweep={changed}", f"--root={root}", "--print_commands"])
  with open(os.path.join(root, sweep_lib.PLAN)) as f:
    assert f.read() == before  # the plan the runs were made with is kept.
