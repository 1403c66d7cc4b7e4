"""Each config field is declared once (vlfusion.config_fields), and what is known about it is read off
that declaration: the defaults, the checks, when it is read, resume rules and the structural check."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs.pretrain import co_attention
from vlfusion import config_doc, config_fields, configuration
from vlfusion.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves(config, prefix=""):
  """{dotted: {type, value[, reference]}} of a ConfigDict, as tests/base_config_reference.json records
  the defaults from before the fields were declared."""
  out = {}
  for key in config.keys():
    field, value, name = config._fields[key], config[key], prefix + key
    if isinstance(value, ml_collections.ConfigDict) and name not in config_fields.FIELDS:
      out.update(_leaves(value, name + "."))
      continue
    out[name] = {"type": type(value).__name__,
                 "value": value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value}
    if isinstance(field, ml_collections.FieldReference):
      out[name]["reference"] = field.get_type().__name__
  return out


def test_base_config_keeps_every_default_it_had_before_the_fields_were_declared():
  """tests/base_config_reference.json was written from the hand-written base_config the declarations
  replaced; every field in it keeps its value and Python type (fields added since are not in it). A None
  default is now always a typed reference, as data.seed and data.data_dir were before (the per-stream
  norms were plain None, which the command line could not set)."""
  with open(os.path.join(ROOT, "tests", "base_config_reference.json")) as f:
    reference = json.load(f)
  declared = json.loads(json.dumps(_leaves(configuration.base_config()), default=list))
  assert set(reference) <= set(declared), sorted(set(reference) - set(declared))
  for name, before in reference.items():
    now = declared[name]
    assert (now["type"], now["value"]) == (before["type"], before["value"]), name
    if "reference" in before:
      assert now["reference"] == before["reference"], name
  assert set(declared) == set(config_fields.FIELDS)


def test_every_field_has_a_one_line_doc_and_a_default_of_its_type():
  for name, field in config_fields.FIELDS.items():
    assert field.doc.strip() and "\n" not in field.doc, name
    assert field.default is None or configuration.has_type(field.default, field.type), name


def test_each_cross_field_check_names_declared_fields():
  """A check across fields says what it reads; each name is a declared field or a section of them."""
  for reads, check in configuration.CROSS_FIELD_CHECKS:
    assert reads, check.__name__
    for name in reads:
      assert name in config_fields.FIELDS or any(f.startswith(name + ".") for f in config_fields.FIELDS), (
          f"{check.__name__} reads {name}, which no declaration has")


def test_the_derived_rules_are_the_declarations():
  assert workdir_lib.RESUMABLE_CHANGES == config_fields.resumable_changes()
  assert "train.num_steps" in workdir_lib.RESUMABLE_CHANGES and "evals." in workdir_lib.RESUMABLE_CHANGES
  assert "model.fusion_layers" not in workdir_lib.RESUMABLE_CHANGES
  assert configuration.NON_STRUCTURAL == config_fields.non_structural()
  assert "dropout" in configuration.NON_STRUCTURAL and "fusion_layers" not in configuration.NON_STRUCTURAL


@pytest.mark.parametrize("field, bad", [("train.max_nonfinite_fraction", 2.0), ("model.dropout", 1.5),
                                        ("model.fusion_layers", -1)])
def test_removing_a_declaration_removes_the_field_everywhere_at_once(monkeypatch, field, bad):
  """With one declaration gone, the defaults lack the field, validation no longer checks it, and neither
  the resume rules nor the sweep's structural check (model_differences) name it."""
  declared = config_fields.FIELDS[field]
  config = co_attention.get_config("tiny")
  config.unlock()
  configuration.override(config, {field: bad})
  with pytest.raises(configuration.ConfigError, match=rf"config\.{field}="):
    configuration.validate(config)
  other = co_attention.get_config("tiny").model
  other.unlock()
  leaf = field[len("model."):]
  if field.startswith("model."):
    configuration.override(other, {leaf: 3 if declared.type is int else 0.25})
  differs_before = configuration.model_differences(other, config.model)

  monkeypatch.setattr(config_fields, "FIELDS", {k: v for k, v in config_fields.FIELDS.items() if k != field})
  present, _ = configuration.field_value(configuration.base_config(), field)
  assert not present
  configuration.validate(config)  # the bad value is no longer known to any check.
  resumable = config_fields.resumable_changes()
  assert field not in resumable and declared.resumable == (field in workdir_lib.RESUMABLE_CHANGES)
  if field.startswith("model."):
    assert leaf not in config_fields.non_structural() and leaf not in config_fields.structural()
    assert any(leaf in d for d in differs_before) == declared.structural
    assert not any(f"model.{leaf}:" in d for d in configuration.model_differences(other, config.model))


def test_the_override_is_typed():
  config = co_attention.get_config("tiny")
  config.unlock()
  configuration.override(config, {"optimizer.learning_rate": 1, "eval.tasks": ["itm"],
                                  "evals.held": {"tasks": ("itm",)}})
  assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)
  assert config.eval.tasks == ("itm",) and tuple(config.evals.held.tasks) == ("itm",)
  with pytest.raises(configuration.ConfigError, match=r"has no field config\.model\.fusion_layer\b"):
    configuration.override(config, {"model.fusion_layer": 3})
  with pytest.raises(configuration.ConfigError, match="wrong type for config.train.num_steps"):
    configuration.override(config, {"train.num_steps": True})
  with pytest.raises(configuration.ConfigError, match="wrong type for config.model.scan_layers"):
    configuration.override(config, {"model.scan_layers": 1})
  configuration.override(config, {"data.seed": 3, "model.text.pre_norm": True}, flags=True)
  assert (config.data.seed, config.model.text.pre_norm) == (3, True)
  with pytest.raises(configuration.ConfigError, match=r"configs/x.py has no field config\.evals\.other"):
    configuration.override(config, {"evals.other": {"tasks": ("itm",)}}, flags=True, source="configs/x.py")


def test_the_loader_reads_a_config_file_with_its_argument():
  config = configuration.load_config_file("configs/pretrain/co_attention.py:small")
  assert config.to_dict() == co_attention.get_config("small").to_dict()
  config.model.fusion_layers = 1  # unlocked.
  with pytest.raises(configuration.ConfigError, match="config file 'configs/pretrain/no.py' does not exist"):
    configuration.load_config_file("configs/pretrain/no.py:tiny")


def test_docs_config_md_is_current():
  """docs/config.md is generated from the declarations; regenerate it when a field changes."""
  generated = subprocess.run([sys.executable, "-m", "vlfusion.config_doc"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
  with open(os.path.join(ROOT, "docs", "config.md")) as f:
    checked_in = f.read()
  assert checked_in == generated, ("docs/config.md is stale; regenerate it with "
                                   "`python -m vlfusion.config_doc > docs/config.md`")
  for name, field in config_fields.FIELDS.items():
    assert f"`{name}`" in generated and config_doc.markdown_cell(field.doc) in generated, name
