"""Evaluates a checkpoint on the validation split and writes `workdir/eval/step_<N>.json`."""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vlfusion import configuration
from vlfusion.data import pipeline
from vlfusion.data.questions import QUESTION_TYPES
from vlfusion.data.scenes import NEGATIVE_KINDS
from vlfusion.evaluation.digests import params_digest
from vlfusion.training import checkpointing, partitioning
from vlfusion.training.trainer import Setup


def _eval_counts(model: nn.Module, params: Any, batch: dict[str, Any]) -> dict[str, jax.Array]:
  """Correct and total counts of ITM, MLM, VQA and pair predictions on one batch (padding rows excluded)."""
  outputs = model.apply({"params": params}, batch, train=False)
  example = batch["example_mask"].astype(jnp.float32)
  counts = {}
  if "itm_logits" in outputs:
    correct = (jnp.argmax(outputs["itm_logits"], -1) == batch["itm_labels"]).astype(jnp.float32)
    counts["itm_correct"] = jnp.sum(correct * example)
    counts["itm_total"] = jnp.sum(example)
    if "itm_negative_kind" in batch:  # accuracy on positives and on each kind of negative.
      for k, kind in enumerate(NEGATIVE_KINDS):
        of_kind = example * (batch["itm_negative_kind"] == k)
        counts[f"itm_{kind}_correct"] = jnp.sum(correct * of_kind)
        counts[f"itm_{kind}_total"] = jnp.sum(of_kind)
  if "vqa_logits" in outputs and "vqa_scores" in batch:
    # VQA accuracy: the soft score of the arg-max answer (min(#humans who gave it / 3, 1) on VQA v2).
    scores = batch["vqa_scores"].astype(jnp.float32)
    top = jnp.take_along_axis(scores, jnp.argmax(outputs["vqa_logits"], -1)[:, None], axis=-1)[:, 0]
    counts["vqa_correct"] = jnp.sum(top * example)
    counts["vqa_total"] = jnp.sum(example)
    if "vqa_question_type" in batch:  # shapes world: per question type (-1 = untyped, VQA v2).
      for k, qtype in enumerate(QUESTION_TYPES):
        of_type = example * (batch["vqa_question_type"] == k)
        counts[f"vqa_{qtype}_correct"] = jnp.sum(top * of_type)
        counts[f"vqa_{qtype}_total"] = jnp.sum(of_type)
  if "pairs_logits" in outputs and "pair_labels" in batch:
    correct = (jnp.argmax(outputs["pairs_logits"], -1) == batch["pair_labels"]).astype(jnp.float32)
    counts["pairs_correct"] = jnp.sum(correct * example)
    counts["pairs_total"] = jnp.sum(example)
  if "mlm_logits" in outputs and "mlm_weights" in batch:
    w = batch["mlm_weights"].astype(jnp.float32) * example[:, None]
    correct = (jnp.argmax(outputs["mlm_logits"], -1) == batch["mlm_targets"]).astype(jnp.float32)
    counts["mlm_correct"] = jnp.sum(correct * w)
    counts["mlm_total"] = jnp.sum(w)
  return counts


def _itc_embeddings(model: nn.Module, params: Any, batch: dict[str, Any]) -> dict[str, jax.Array]:
  """The ITC text and image embeddings of one batch and which rows are matching pairs."""
  outputs = model.apply({"params": params}, batch, train=False)
  pair = batch["example_mask"].astype(bool)
  if "itm_labels" in batch:  # an ITM negative's caption does not describe its image.
    pair = pair & (batch["itm_labels"] == 1)
  return {"text": outputs["itc_text_embeds"], "image": outputs["itc_image_embeds"], "pair": pair}


def recall_at_k(similarity: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
  """R@K of retrieving column i for query row i of `similarity` [N,N] (ties count against)."""
  diagonal = np.diagonal(similarity)[:, None]
  rank = np.sum(similarity > diagonal, axis=1) + np.sum(
      (similarity == diagonal) & ~np.eye(len(similarity), dtype=bool), axis=1)
  return {f"r{k}": float(np.mean(rank < k)) for k in ks}


class Evaluator:
  """Accuracy of the model's ITM, MLM, VQA and pair predictions over the whole eval split.

  Reports each task of `config.eval.tasks` that is a head of the model (`config.model.heads`); VQA
  accuracy is the soft score of the arg-max answer, also by question type on the shapes world. `itc` is
  retrieval over the split's matching pairs with the ITC embeddings: R@1/5/10 text-to-image and
  image-to-text, with `accuracy` = text-to-image R@1. Scenes with identical captions make some
  ground truths ambiguous, so retrieval on the shapes world is bounded below 1.

  Shared by eval.py and by evaluation during training (`config.eval.every_steps`).
  """

  def __init__(self, setup: Any, config: ml_collections.ConfigDict):
    self.setup = setup
    self.config = config
    heads = set(config.model.heads)
    self.tasks = [t for t in config.eval.tasks if t in heads]
    if not self.tasks:
      raise configuration.ConfigError(
          f"config.eval.tasks={tuple(config.eval.tasks)}: none is a head of this model "
          f"(config.model.heads={tuple(config.model.heads)}); evaluable tasks: {configuration.EVAL_TASKS}")
    self.source = pipeline.make_batch_source(
        config, config.data.eval_split, process_index=jax.process_index(),
        process_count=jax.process_count())
    self.counts_fn = jax.jit(lambda p, b: _eval_counts(setup.model, p, b))
    if "itc" in self.tasks:
      self.itc_fn = jax.jit(lambda p, b: _itc_embeddings(setup.model, p, b),
                            out_shardings=partitioning.replicated(setup.mesh))

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    """{task: {"accuracy": a, "count": n, ...}} for each evaluated task."""
    totals: dict[str, float] = {}
    embeddings: dict[str, list[np.ndarray]] = {"text": [], "image": []}
    with jax.set_mesh(self.setup.mesh), nn.logical_axis_rules(self.setup.rules):
      for local in self.source.eval_batches(self.config.eval.batch_size):
        batch = partitioning.to_global_batch(local, self.setup.mesh)
        for k, v in jax.device_get(self.counts_fn(params, batch)).items():
          totals[k] = totals.get(k, 0.0) + float(v)
        if "itc" in self.tasks:  # replicated: every process holds the whole batch's embeddings.
          out = {k: np.asarray(v.addressable_data(0)) for k, v in self.itc_fn(params, batch).items()}
          for k in ("text", "image"):
            embeddings[k].append(out[k][out["pair"]])
    metrics = {}
    for task in self.tasks:
      if f"{task}_total" in totals:
        metrics[task] = {
            "accuracy": totals[f"{task}_correct"] / max(totals[f"{task}_total"], 1.0),
            "count": int(totals[f"{task}_total"]),
        }
    if "itm" in metrics:
      metrics["itm"]["by_kind"] = {
          ("positive" if kind == "none" else kind): {
              "accuracy": totals[f"itm_{kind}_correct"] / totals[f"itm_{kind}_total"],
              "count": int(totals[f"itm_{kind}_total"])}
          for kind in NEGATIVE_KINDS if totals.get(f"itm_{kind}_total", 0) > 0}
    if "itc" in self.tasks:
      text, image = (np.concatenate(embeddings[k]).astype(np.float64) for k in ("text", "image"))
      similarity = text @ image.T  # the embeddings are unit vectors: cosine similarity.
      t2i, i2t = recall_at_k(similarity), recall_at_k(similarity.T)
      metrics["itc"] = {"accuracy": t2i["r1"], "count": len(text), "text_to_image": t2i,
                        "image_to_text": i2t}
    if "vqa" in metrics:
      metrics["vqa"]["by_type"] = {
          qtype: {"accuracy": totals[f"vqa_{qtype}_correct"] / totals[f"vqa_{qtype}_total"],
                  "count": int(totals[f"vqa_{qtype}_total"])}
          for qtype in QUESTION_TYPES if totals.get(f"vqa_{qtype}_total", 0) > 0}
    return metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> dict:
  """Restores the checkpoint at `step` (the latest by default), evaluates it, writes the JSON."""
  setup = Setup(config)
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  restored = checkpointing.restore(manager, setup.abstract_state, step)
  manager.close()
  if restored is None:
    raise FileNotFoundError(f"no complete checkpoint under {checkpointing.checkpoint_dir(workdir)}")
  state, _, step = restored
  metrics = Evaluator(setup, config).run(state.params)
  result = {
      "step": int(step),
      "split": config.data.eval_split,
      "config_digest": configuration.digest(config),
      "params_digest": params_digest(state.params),
      **metrics,
  }
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"step_{step}.json")
    with open(path, "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
    logging.info("Wrote %s", path)
  return result
