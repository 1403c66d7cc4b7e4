"""Every pretraining objective trains through the real loop on shapes-world batches.

The model tests check heads and losses on hand-made batches; these check that the pipeline's targets
(`mrm_*`, `vqa_scores`, `pair_*`, ITC positives) and the heads agree end to end, a few steps each.
"""

import json
import os

import numpy as np
import pytest

from configs.pretrain import albef, co_attention, lxmert, vilt
from tests.conftest import tiny_config
from vlfusion import experiment
from vlfusion.data import pipeline, questions

pytestmark = pytest.mark.slow

STEPS = {"train.num_steps": 3, "train.log_every_steps": 1, "train.checkpoint_every_steps": 100,
         "optimizer.warmup_steps": 1, "data.global_batch_size": 16}
ONLY = {"objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.mrm": 0.0, "objectives.itc": 0.0}

CASES = {
    # regions: MLM + ITM + masked region modelling (feature regression and object labels).
    "lxmert_mrm": (lxmert, {}, {"mlm_loss", "itm_loss", "mrm_feature_loss", "mrm_label_loss"}),
    # patches: ALBEF's contrastive loss next to ITM and MLM.
    "albef_itc": (albef, {}, {"mlm_loss", "itm_loss", "itc_loss"}),
    # VQA alone: questions as text, soft scores over the 17 shapes-world answers.
    "vilt_vqa": (vilt, dict(ONLY, **{"objectives.vqa": 1.0, "model.heads": ("vqa",),
                                     "model.vqa.num_answers": len(questions.ANSWERS)}), {"vqa_loss"}),
    # Image pairs: a statement about two scenes, true or false.
    "co_attention_pairs": (co_attention, dict(ONLY, **{"objectives.pairs": 1.0, "model.heads": ("pairs",)}),
                           {"pairs_loss"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_objective_trains_on_shapes_world(case, data_dir, tmp_path):
  module, overrides, losses = CASES[case]
  config = tiny_config(module, data_dir, **dict(STEPS, **overrides))
  workdir = str(tmp_path / case)
  experiment.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    assert losses <= set(r), f"{case}: {sorted(losses - set(r))} missing from {sorted(r)}"
    assert all(np.isfinite(r[k]) and r[k] > 0 for k in losses), r
    assert r["nonfinite"] == 0.0
  # with every weight 1, the loss is the sum of the objectives' losses.
  parts = {k for k in losses if not k.startswith("mrm_")}
  parts |= {"mrm_loss"} if "mrm_label_loss" in losses else set()
  assert records[0]["loss"] == pytest.approx(sum(records[0][k] for k in parts), rel=1e-5)
  # eval.py's path reports the task heads over the whole validation split.
  task = {"vilt_vqa": "vqa", "co_attention_pairs": "pairs", "albef_itc": "itc"}.get(case)
  if task:
    result = experiment.evaluate(config, workdir)["default"]  # the one evaluator without config.evals.
    source = pipeline.make_batch_source(config, config.data.eval_split)
    assert 0.0 <= result[task]["accuracy"] <= 1.0
    if task == "itc":  # retrieval among the split's matching pairs (about half its rows).
      assert 0 < result["itc"]["count"] < source.num_examples
      for direction in ("text_to_image", "image_to_text"):
        r = result["itc"][direction]
        assert 0.0 <= r["r1"] <= r["r5"] <= r["r10"] <= 1.0
      return
    assert result[task]["count"] == source.num_examples
    if task == "vqa":
      by_type = result["vqa"]["by_type"]
      assert sum(t["count"] for t in by_type.values()) == source.num_examples
      assert sum(t["accuracy"] * t["count"] for t in by_type.values()) == pytest.approx(
          result["vqa"]["accuracy"] * source.num_examples, rel=1e-5)
