"""vlfusion.analysis.model_table: stage attribution of parameters, and docs/models.md covers every config."""

import os

import jax
import numpy as np

from configs.pretrain import dual_encoder, lxmert, vilt
from vlfusion.analysis import model_table

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_parameter_counts_by_stage():
  config = lxmert.get_config("tiny")
  counts = model_table.parameter_counts(config)
  leaves = jax.tree.leaves(model_table.abstract_params(config))
  assert counts["total"] == sum(int(np.prod(x.shape)) for x in leaves)
  assert all(counts[s] > 0 for s in model_table.STAGES)
  m = config.model
  d, f = m.text.hidden_size, m.text.mlp_dim
  # One post-LN BERT layer: 4 attention projections, the MLP and two LayerNorms.
  per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
  assert counts["text"] == m.text.num_layers * per_layer
  assert model_table.parameter_counts(dual_encoder.get_config("tiny"))["fusion"] == 0
  single = model_table.parameter_counts(vilt.get_config("tiny"))
  assert single["text"] == single["image"] == 0


def test_docs_table_lists_every_config():
  with open(os.path.join(ROOT, "docs", "models.md")) as f:
    table = f.read()
  for path in model_table.config_files(os.path.join(ROOT, "configs", "pretrain")):
    name = os.path.splitext(os.path.basename(path))[0]
    assert f"| {name} |" in table, name
