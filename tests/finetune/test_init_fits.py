"""config.init restores the model it names or refuses: only the new task head may stay fresh unsaid.

The documented pretrain -> fine-tune commands are read from the docs themselves (config docstrings,
README, docs/*.md) and parsed as train.py parses its flags, so a command that stops fitting fails here.
"""

import ast
import glob
import json
import os
import re
import shlex

import pytest
from absl import flags
from flax import traverse_util
from ml_collections import config_flags

from configs.finetune import pairs, vqa
from configs.pretrain import co_attention
from tests.finetune.checkpoints import save_random_checkpoint
from vlfusion import configuration, experiment
from vlfusion.configuration import ConfigError
from vlfusion.training import initialization, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = ["README.md", *sorted(glob.glob("docs/*.md", root_dir=ROOT)),
             *sorted(glob.glob("configs/finetune/*.py", root_dir=ROOT))]


def _shell_lines(text):
  """Shell lines of `text`: backslash continuations joined, a quoted value run on to its closing quote."""
  lines, pending = [], ""
  for raw in text.splitlines():
    line = pending + raw.strip()
    if line.endswith("\\"):
      pending = line[:-1] + " "
      continue
    if line.count('"') % 2:  # a quote still open: the value goes on in the next line.
      pending = line + " "
      continue
    pending = ""
    lines.append(line)
  return lines


def _commands(text):
  """The `python train.py ...` commands of `text` as argument lists, shell variables (NAME="...") expanded."""
  variables, out = {}, []
  for line in _shell_lines(text):
    assignment = re.match(r'^([A-Z_]+)="(.*)"$', line)
    if assignment:
      variables[assignment.group(1)] = assignment.group(2)
      continue
    if not line.startswith("python train.py "):
      continue
    line = re.sub(r"\$([A-Z_]+)", lambda m: variables.get(m.group(1), m.group(0)), line).split("  #")[0]
    out.append(shlex.split(line)[2:])
  return out


def _parse(argv):
  """(config, workdir) as train.py's flags read `argv`."""
  argv = ["train.py", *(re.sub(r"^--config=configs/", f"--config={ROOT}/configs/", a) for a in argv)]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(argv)
  config = values.config
  config.unlock()
  return config, values.workdir


def documented_pairs():
  """(where, pretrain argv, fine-tune argv) for every documented fine-tune from a documented pretraining."""
  found = []
  for document in DOCUMENTS:
    with open(os.path.join(ROOT, document)) as f:
      text = f.read()
    commands = _commands(ast.get_docstring(ast.parse(text)) if document.endswith(".py") else text)
    made = {}  # workdir -> the pretraining command that writes it.
    for argv in commands:
      options = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
      if options.get("config", "").startswith("configs/pretrain/"):
        made[options["workdir"]] = argv
      elif options.get("config.init.checkpoint") in made:
        found.append((document, made[options["config.init.checkpoint"]], argv))
  return found


def _abstract_params(config):
  if config.model.get("vqa") and config.model.vqa.num_answers == 0:
    config.model.vqa.num_answers = 17  # the shapes world's answers; no data read.
  return trainer.Setup(config).abstract_state.params


def _names(params):
  return sorted("/".join(k) for k in initialization.unroll(traverse_util.flatten_dict(params)))


def _source(config, params, path="W_pre"):
  """A `Source` as `config.init.checkpoint` reads it: the pretraining run's parameters and saved model."""
  saved = json.loads(configuration.to_json(config))["model"]
  return initialization.Source("init.checkpoint", path, path,
                               initialization.unroll(traverse_util.flatten_dict(params)), saved)


PAIRS = documented_pairs()


def test_the_docs_document_pretrain_then_finetune():
  where = {document for document, _, _ in PAIRS}
  assert {"configs/finetune/vqa.py", "configs/finetune/pairs.py", "configs/finetune/retrieval.py",
          "docs/finetuning.md"} <= where, where


@pytest.mark.parametrize("document,pretrain,finetune", PAIRS,
                         ids=[f"{d}:{i}" for i, (d, _, _) in enumerate(PAIRS)])
def test_documented_finetune_restores_all_but_the_new_head(document, pretrain, finetune):
  pre_config, _ = _parse(pretrain)
  config, _ = _parse(finetune)
  pre_params, params = _abstract_params(pre_config), _abstract_params(config)
  report = initialization.match(_source(pre_config, pre_params), params, config)
  new_heads = tuple(f"heads_{h}/" for h in config.model.heads if h not in pre_config.model.heads)
  old_heads = tuple(f"heads_{h}/" for h in pre_config.model.heads if h not in config.model.heads)
  assert report.fresh == [n for n in _names(params) if n.startswith(new_heads)]
  assert report.unused == [n for n in _names(pre_params) if n.startswith(old_heads)]
  assert report.notes == []


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A co_attention tiny pretraining workdir (random parameters at step 7, its config.json)."""
  workdir = str(tmp_path_factory.mktemp("pre"))
  save_random_checkpoint(workdir, co_attention.get_config("tiny"))
  return workdir


def _vqa_config(data_dir, **overrides):
  config = vqa.get_config("tiny,family=co_attention")
  config.unlock()
  config.data.data_dir = data_dir
  return configuration.override(config, {  # 17 answers: the shapes world's, without reading its 40k scenes.
      "train.num_steps": 2, "eval.every_steps": 0, "model.vqa.num_answers": 17, **overrides})


def test_another_model_is_refused_before_the_workdir_is_touched(pretrained, data_dir, tmp_path):
  """The command vqa.py's docstring gave: co_attention pretrained over regions, post-LN; the VQA recipe's
  model reads pixels through a conv stem, pre-LN. Refused, naming what differs; nothing written."""
  workdir = str(tmp_path / "vqa")
  config = _vqa_config(data_dir, **{"init.checkpoint": pretrained})
  with pytest.raises(ConfigError) as refusal:
    experiment.train_and_evaluate(config, workdir)
  message = str(refusal.value)
  for part in ("config.init.checkpoint=", "model.pre_norm: False vs True",
               "model.image.input: 'regions' vs 'patches'", "model.image.stem: 'linear' vs 'conv'",
               "image_embeddings/conv_stem", "encoder/text_final_norm", "image_embeddings/box_proj",
               "config.init.allow_fresh"):
    assert part in message, (part, message)
  fresh_line = next(line for line in message.splitlines() if "fresh beyond the new head" in line)
  assert "heads_vqa" not in fresh_line  # the new head is expected fresh.
  assert not os.path.exists(workdir)


def test_allow_fresh_names_what_may_stay_fresh(pretrained, data_dir):
  config = _vqa_config(data_dir, **{"init.checkpoint": pretrained, "init.allow_fresh": "^image_embeddings/"})
  params = _abstract_params(config)
  source = initialization.load(config)
  with pytest.raises(ConfigError, match=r"fresh .*encoder/image_final_norm"):  # not named: refused.
    initialization.match(source, params, config)
  config.init.allow_fresh = r"^image_embeddings/|_final_norm/"
  report = initialization.match(source, params, config)
  assert "image_embeddings/conv_stem/proj/kernel" in report.fresh
  assert "encoder/text_final_norm/scale" in report.fresh and "heads_vqa/classifier/kernel" in report.fresh
  assert "image_embeddings/box_proj/kernel" in report.unused
  assert any("model.pre_norm" in note for note in report.notes)  # accepted, and said.
  assert "encoder/fusion_layer_0/text_layer/mlp/norm/scale" in report.restored
  config.init.allow_fresh = "nothing_by_this_name"
  with pytest.raises(ConfigError, match="config.init.allow_fresh='nothing_by_this_name' matches no "):
    initialization.match(source, params, config)
  config.init.allow_fresh = "("
  with pytest.raises(ConfigError, match=r"config.init.allow_fresh='\(' is not a regular expression"):
    configuration.validate(config)


@pytest.mark.slow  # trains a step.
def test_a_mistyped_checkpoint_leaves_the_workdir_reusable(pretrained, data_dir, tmp_path):
  workdir = str(tmp_path / "pairs")
  config = pairs.get_config("tiny,family=co_attention")
  config.unlock()
  configuration.override(config, {"data.data_dir": data_dir, "train.num_steps": 1, "eval.every_steps": 0,
                                  "init.checkpoint": pretrained + "_typo"})
  with pytest.raises(ConfigError, match="config.init.checkpoint=.*_typo'?: no such file or directory"):
    experiment.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)  # no config.json, no checkpoints, not even the directory.
  config.init.checkpoint = pretrained
  state = experiment.train_and_evaluate(config, workdir)
  assert int(state.step) == 1
  report = json.load(open(os.path.join(workdir, initialization.REPORT_FILE)))
  assert report["fresh"] and all(n.startswith("heads_pairs/") for n in report["fresh"])
  assert os.path.isfile(os.path.join(workdir, "config.json"))
