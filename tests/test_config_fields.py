"""Each config field is declared once (vlfusion.config_fields), and what is known about it is read off
that declaration."""

import json
import os

import ml_collections

from vlfusion import config_fields, configuration

HERE = os.path.dirname(os.path.abspath(__file__))


def _leaves(config, prefix=""):
  """{dotted: {type, value[, reference]}} of a ConfigDict, as tests/base_config_reference.json records
  the defaults before they were declared field by field."""
  out = {}
  for key in config.keys():
    field, value, name = config._fields[key], config[key], prefix + key
    if isinstance(value, ml_collections.ConfigDict) and config_fields.FIELDS.get(name, None) is None:
      out.update(_leaves(value, name + "."))
      continue
    out[name] = {"type": type(value).__name__,
                 "value": value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value}
    if isinstance(field, ml_collections.FieldReference):
      out[name]["reference"] = field.get_type().__name__
  return out


def test_the_declarations_give_today_s_base_config_field_for_field():
  """Every default recorded before the fields were declared (tests/base_config_reference.json, written
  from the hand-written base_config) is the declared one: same value, same Python type; a None default
  is a typed reference, as data.seed and data.data_dir were (the per-stream norms were plain None)."""
  with open(os.path.join(HERE, "base_config_reference.json")) as f:
    reference = json.load(f)
  declared = json.loads(json.dumps(_leaves(config_fields.base_config()), default=list))
  assert set(reference) <= set(declared), sorted(set(reference) - set(declared))
  for name, before in reference.items():
    now = declared[name]
    assert (now["type"], now["value"]) == (before["type"], before["value"]), name
    assert now.get("reference", before.get("reference")) == before.get("reference", now.get("reference")), name
  assert configuration.to_json(config_fields.base_config()) == configuration.to_json(configuration.base_config())
