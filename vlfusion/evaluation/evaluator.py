"""Evaluates a checkpoint on the validation split and writes `workdir/eval/step_<N>.json`.

Every accuracy that depends on the image is reported with `accuracy_shuffled_images`: the same rows
scored again, each shown the image of another image of the split (`shuffled_images`; every key of
`pipeline.IMAGE_KEYS` moves together). A model that ignores the image scores the same both ways; the
figure is left out, with a warning, when the split holds a single image. VQA also reports
`text_prior_accuracy` (see `text_prior`) and the figures by question type (and by answer type on VQA v2).
"""

from __future__ import annotations

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vlfusion import configuration
from vlfusion.data import pipeline
from vlfusion.data.questions import QUESTION_TYPES
from vlfusion.data.scenes import CAPTION_KINDS, NEGATIVE_KINDS
from vlfusion.evaluation import results, shuffled_images, text_prior
from vlfusion.evaluation.digests import params_digest
from vlfusion.training import checkpointing, partitioning
from vlfusion.training import workdir as workdir_lib
from vlfusion.training.setup import Setup

# Per-row values summed per group: the model's score, with shuffled images, and the text prior's.
_VALUES = {"correct": "accuracy", "shuffled": "accuracy_shuffled_images", "prior": "text_prior_accuracy"}
# Tasks whose accuracy depends on the image, and so come with `accuracy_shuffled_images`.
IMAGE_TASKS = ("itm", "vqa", "pairs")


def _sums(values: dict[str, jax.Array], weight: jax.Array) -> dict[str, jax.Array]:
  return {**{k: jnp.sum(v * weight) for k, v in values.items()}, "total": jnp.sum(weight)}


def _eval_counts(model: nn.Module, params: Any, batch: dict[str, Any],
                 question_types: tuple[str, ...] = QUESTION_TYPES) -> dict[str, dict[str, dict]]:
  """{task: {group: {value: sum, "total": n}}} on one batch, padding rows excluded.

  Group "" is the whole task; "type:<t>" a VQA question type (`vqa_question_type` indexes
  `question_types`), "answer:<a>" a VQA v2 answer type, "kind:<k>" an ITM negative kind. Values:
  `correct` (the model's accuracy summed; VQA: the soft score of the arg-max answer), `shuffled` (the
  same with each row shown the images it holds under `pipeline.SHUFFLED_IMAGES`; absent without
  them), `prior` (VQA: the soft score of `vqa_prior_answer`, -1 scoring 0).
  """
  moved = batch.get(pipeline.SHUFFLED_IMAGES)
  batch = {k: v for k, v in batch.items() if k != pipeline.SHUFFLED_IMAGES}
  outputs = model.apply({"params": params}, batch, train=False)
  image_heads = {"itm_logits", "vqa_logits", "pairs_logits"} & set(outputs)
  shuffled = None
  if image_heads and moved is not None:
    shuffled = model.apply({"params": params}, {**batch, **moved}, train=False)
  shuffle = lambda values, score: values | ({"shuffled": score(shuffled)} if shuffled is not None else {})
  example = batch["example_mask"].astype(jnp.float32)
  counts: dict[str, dict[str, dict]] = {}
  if "itm_logits" in outputs:
    correct = lambda out: (jnp.argmax(out["itm_logits"], -1) == batch["itm_labels"]).astype(jnp.float32)
    values = shuffle({"correct": correct(outputs)}, correct)
    counts["itm"] = {"": _sums(values, example)}
    if "itm_negative_kind" in batch:  # accuracy on positives and on each kind of negative.
      for k, kind in enumerate(NEGATIVE_KINDS):
        counts["itm"][f"kind:{kind}"] = _sums(values, example * (batch["itm_negative_kind"] == k))
    if "itm_caption_form" in batch:  # by caption form, both labels; relation captions against swaps.
      form = batch["itm_caption_form"]
      for k, name in enumerate(CAPTION_KINDS):
        counts["itm"][f"form:{name}"] = _sums(values, example * (form == k))
      relation = CAPTION_KINDS.index("relation")
      counts["itm"]["balanced:positive"] = _sums(values, example * (form == relation) * batch["itm_labels"])
      counts["itm"]["balanced:swap"] = _sums(
          values, example * (batch["itm_negative_kind"] == NEGATIVE_KINDS.index("relation")))
  if "vqa_logits" in outputs and "vqa_scores" in batch:
    # VQA accuracy: the soft score of the arg-max answer (min(#humans who gave it / 3, 1) on VQA v2).
    scores = batch["vqa_scores"].astype(jnp.float32)
    score_of = lambda answer: jnp.take_along_axis(scores, jnp.maximum(answer, 0)[:, None], -1)[:, 0] * (
        answer >= 0)
    predicted = lambda out: score_of(jnp.argmax(out["vqa_logits"], -1))
    values = shuffle({"correct": predicted(outputs)}, predicted)
    if "vqa_prior_answer" in batch:
      values["prior"] = score_of(batch["vqa_prior_answer"])
    counts["vqa"] = {"": _sums(values, example)}
    if "vqa_question_type" in batch:
      for k, qtype in enumerate(question_types):
        counts["vqa"][f"type:{qtype}"] = _sums(values, example * (batch["vqa_question_type"] == k))
    if "vqa_answer_type" in batch:
      for k, atype in enumerate(pipeline.ANSWER_TYPES):
        counts["vqa"][f"answer:{atype}"] = _sums(values, example * (batch["vqa_answer_type"] == k))
  if "pairs_logits" in outputs and "pair_labels" in batch:
    correct = lambda out: (jnp.argmax(out["pairs_logits"], -1) == batch["pair_labels"]).astype(jnp.float32)
    counts["pairs"] = {"": _sums(shuffle({"correct": correct(outputs)}, correct), example)}
  if "mlm_logits" in outputs and "mlm_weights" in batch:
    w = batch["mlm_weights"].astype(jnp.float32) * example[:, None]
    correct = (jnp.argmax(outputs["mlm_logits"], -1) == batch["mlm_targets"]).astype(jnp.float32)
    counts["mlm"] = {"": _sums({"correct": correct}, w)}
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


def summarize(sums: dict[str, float]) -> dict[str, float]:
  """{"accuracy", "accuracy_shuffled_images", ["text_prior_accuracy"], "count"} of one group's sums."""
  total = sums["total"]
  out = {name: sums[value] / max(total, 1.0) for value, name in _VALUES.items() if value in sums}
  out["count"] = int(round(total))
  return out


def _balanced(positive: dict[str, float], swap: dict[str, float]) -> dict[str, Any]:
  """ITM on relation captions against their swapped-relation negatives, each label weighing half.

  A relation caption and its swap share every word, so no rule on the text tells them apart: a model
  that ignores the image, or answers one label, scores 0.5 here whatever the mix of labels.
  """
  both = {"positive": summarize(positive), "swap": summarize(swap)}
  out: dict[str, Any] = {name: (both["positive"][name] + both["swap"][name]) / 2
                         for name in both["positive"] if name != "count" and name in both["swap"]}
  out["count"] = both["positive"]["count"] + both["swap"]["count"]
  for label, values in both.items():  # flat, as TensorBoard scalars want them.
    out.update({f"{label}_{name}": value for name, value in values.items()})
  return out


def metrics_from_counts(totals: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
  """The reported metrics of each task from its summed counts; groups with no rows are left out."""
  metrics: dict[str, dict[str, Any]] = {}
  for task, groups in totals.items():
    metrics[task] = summarize(groups[""])
    if all(groups.get(f"balanced:{g}", {}).get("total", 0) > 0 for g in ("positive", "swap")):
      metrics[task]["relation_balanced"] = _balanced(groups["balanced:positive"], groups["balanced:swap"])
    for group, sums in groups.items():
      if not group or group.startswith("balanced:") or sums["total"] <= 0:
        continue
      kind, name = group.split(":", 1)
      key = {"type": "by_type", "answer": "by_answer_type", "kind": "by_kind", "form": "by_form"}[kind]
      name = "positive" if (kind, name) == ("kind", "none") else name
      metrics[task].setdefault(key, {})[name] = summarize(sums)
  return metrics


class Evaluator:
  """Accuracy of the model's ITM, MLM, VQA and pair predictions over the whole eval split.

  Reports each task of `config.eval.tasks` that is a head of the model (`config.model.heads`); VQA
  accuracy is the soft score of the arg-max answer, also by question type. ITM, VQA and pairs come with
  `accuracy_shuffled_images`, VQA with `text_prior_accuracy` (module docstring). `itc` is retrieval over
  the split's matching pairs with the ITC embeddings: R@1/5/10 text-to-image and image-to-text, with
  `accuracy` = text-to-image R@1. Scenes with identical captions make some ground truths ambiguous, so
  retrieval on the shapes world is bounded below 1.

  Shared by eval.py and by evaluation during training (`config.eval.every_steps`).
  """

  def __init__(self, setup: Any, config: ml_collections.ConfigDict):
    self.setup = setup
    self.config = config
    heads = set(config.model.heads)
    self.tasks = configuration.evaluated_tasks(config.eval.tasks, heads)
    if not self.tasks:
      raise configuration.ConfigError(
          f"config.eval.tasks={tuple(config.eval.tasks)}: none is a head of this model "
          f"(config.model.heads={tuple(config.model.heads)}); evaluable tasks: {configuration.EVAL_TASKS}")
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.source = pipeline.make_batch_source(config, config.data.eval_split, **process)
    self.prior = None
    self.question_types = QUESTION_TYPES
    self._named_types = False  # VQA v2: question types are the annotations' strings.
    if "vqa" in self.tasks and "vqa" in self.source.objectives:
      self.prior = self._text_prior(config, process)
      if "question_types" not in (self.source.builder.info.metadata or {}):
        self._named_types = True  # indexed by the types seen in training.
        self.question_types = tuple(self.prior.question_types) if self.prior else ()
    self._answer_index = {a: i for i, a in enumerate(self.source.answer_vocab)}
    self._type_index = {t: i for i, t in enumerate(self.question_types)}
    question_types = self.question_types
    self._donors: Any = None  # computed on the first run (one read of the split), then reused.
    self.counts_fn = jax.jit(lambda p, b: _eval_counts(setup.model, p, b, question_types))
    if "retrieval" in self.tasks:
      from vlfusion.evaluation.retrieval import RetrievalEvaluator

      self.retrieval = RetrievalEvaluator(setup, config, self.source)
    if "itc" in self.tasks:
      self.itc_fn = jax.jit(lambda p, b: _itc_embeddings(setup.model, p, b),
                            out_shardings=partitioning.replicated(setup.mesh))

  def _text_prior(self, config: ml_collections.ConfigDict, process: dict[str, int]):
    """The text prior of the dataset's training split (config.data.train_split), or None without one."""
    try:
      train = (self.source if config.data.train_split == config.data.eval_split else
               pipeline.make_batch_source(config, config.data.train_split, **process))
    except configuration.ConfigError as e:
      logging.warning("No VQA text prior: %s", e)
      return None
    return text_prior.for_split(train.data_source, train.answer_vocab, train.builder.data_dir,
                                config.data.train_split)

  def _host_inputs(self, local: dict[str, Any]) -> dict[str, Any]:
    """Pops the host-side strings of a local batch; adds `vqa_prior_answer` (and VQA v2 type ids)."""
    host = {k: local.pop(k) for k in pipeline.HOST_KEYS if k in local}
    if self.prior is None or "text" not in host:
      return local
    names = host.get("vqa_question_type_name")
    if self._named_types:
      local["vqa_question_type"] = np.array([self._type_index.get(str(t), -1) for t in names], np.int32)
    else:
      names = [QUESTION_TYPES[t] if 0 <= t < len(QUESTION_TYPES) else "" for t in local["vqa_question_type"]]
    answers = [self.prior.answer(str(q), str(t)) for q, t in zip(host["text"], names, strict=True)]
    local["vqa_prior_answer"] = np.array([self._answer_index.get(a, -1) for a in answers], np.int32)
    return local

  def image_donors(self) -> np.ndarray | None:
    """The row whose image each row is shown for `accuracy_shuffled_images` (`shuffled_images`), or
    None when no evaluated task needs one or the split holds a single image (a warning says so)."""
    if not set(IMAGE_TASKS) & set(self.tasks):
      return None
    if self._donors is None:
      donors = shuffled_images.image_donors(self.source.image_identities())
      if donors is None:
        logging.warning("%s split %r holds a single image: no image can be shuffled, so no "
                        "accuracy_shuffled_images is reported.", self.config.data.name, self.source.split)
      self._donors = (donors,)
    return self._donors[0]

  def run(self, params: Any) -> dict[str, dict[str, Any]]:
    """{task: {"accuracy": a, "count": n, ...}} for each evaluated task."""
    totals: Any = None
    embeddings: dict[str, list[np.ndarray]] = {"text": [], "image": []}
    keep_text = self.prior is not None
    batches = self.source.eval_batches(self.config.eval.batch_size, keep_text=keep_text,
                                       image_donors=self.image_donors())
    if self.tasks == ["retrieval"]:  # it reads the split its own way.
      batches = iter(())
    with jax.set_mesh(self.setup.mesh), nn.logical_axis_rules(self.setup.rules):
      for local in batches:
        batch = partitioning.to_global_batch(self._host_inputs(local), self.setup.mesh)
        counts = jax.tree.map(float, jax.device_get(self.counts_fn(params, batch)))
        totals = counts if totals is None else jax.tree.map(lambda a, b: a + b, totals, counts)
        if "itc" in self.tasks:  # replicated: every process holds the whole batch's embeddings.
          out = {k: np.asarray(v.addressable_data(0)) for k, v in self.itc_fn(params, batch).items()}
          for k in ("text", "image"):
            embeddings[k].append(out[k][out["pair"]])
    measured = metrics_from_counts(totals or {})
    metrics = {task: measured[task] for task in self.tasks if task in measured}
    if "itc" in self.tasks:
      text, image = (np.concatenate(embeddings[k]).astype(np.float64) for k in ("text", "image"))
      similarity = text @ image.T  # the embeddings are unit vectors: cosine similarity.
      t2i, i2t = recall_at_k(similarity), recall_at_k(similarity.T)
      metrics["itc"] = {"accuracy": t2i["r1"], "count": len(text), "text_to_image": t2i,
                        "image_to_text": i2t}
    if "retrieval" in self.tasks:
      metrics["retrieval"] = self.retrieval.run(params)
    return metrics


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
  """The numbers of a result as flat TensorBoard names: `vqa_accuracy`, `vqa_by_type/colour_accuracy`."""
  out = {}
  for task, values in metrics.items():
    if not isinstance(values, dict):
      continue
    for key, value in values.items():
      if isinstance(value, dict):
        for group, inner in value.items():
          if isinstance(inner, dict):
            out.update({f"{prefix}{task}_{key}/{group}_{k}": float(v) for k, v in inner.items()})
          else:
            out[f"{prefix}{task}_{key}_{group}"] = float(inner)
      else:
        out[f"{prefix}{task}_{key}"] = float(value)
  return out


DEFAULT_EVALUATOR = "default"


def evaluator_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The run's config as evaluator `name` of `config.evals` sees it: its data, split, tasks, batch size.

  The batches carry the text of the evaluated tasks (questions for vqa, statements for pairs, captions
  otherwise), whatever the run trained on.
  """
  entry = config.evals[name]
  out = ml_collections.ConfigDict(config.to_dict())
  data = entry.get("data", None) or {}
  data = data.to_dict() if hasattr(data, "to_dict") else dict(data)
  if "split" in data:
    out.data.eval_split = data.pop("split")
  for key, value in data.items():
    out.data[key] = value
  tasks = tuple(entry.get("tasks", config.eval.tasks))
  out.eval.tasks = tasks
  out.eval.batch_size = entry.get("batch_size", config.eval.batch_size)
  # Eval batches are padded, so any split size works; one row per process passes the pipeline's check.
  out.data.global_batch_size = jax.process_count()
  evaluated = configuration.evaluated_tasks(tasks, config.model.heads)
  text_of = "vqa" if "vqa" in evaluated else "pairs" if "pairs" in evaluated else None
  for objective in out.objectives:
    caption_task = objective in evaluated and objective in ("mlm", "itm", "itc") or (
        objective == "itc" and "retrieval" in evaluated)
    wanted = objective == text_of if text_of else caption_task
    out.objectives[objective] = 1.0 if wanted else 0.0
  return out


class Evaluators:
  """The evaluators of a run (`config.evals`, or the default one over config.data.eval_split).

  What `eval.py` and training (`config.eval.every_steps`) both call. Results are keyed by evaluator
  name; each holds its dataset and split, then one entry per task.
  """

  def __init__(self, setup: Any, config: ml_collections.ConfigDict):
    self.config = config
    self.evaluators: dict[str, Evaluator] = {}
    if not config.get("evals"):
      self.evaluators[DEFAULT_EVALUATOR] = Evaluator(setup, config)
      return
    for name in config.evals:
      try:
        self.evaluators[name] = Evaluator(setup, evaluator_config(config, name))
      except configuration.ConfigError as e:
        raise configuration.ConfigError(f"config.evals.{name}: {e}") from e

  @property
  def digest(self) -> str:
    """What keys their results (`results`): the evaluator digest of the config they were built with."""
    return configuration.evaluator_digest(self.config)

  def run(self, params: Any) -> dict[str, dict[str, Any]]:
    """{evaluator name: {"dataset", "split", task: metrics, ...}}."""
    out = {}
    for name, ev in self.evaluators.items():
      out[name] = {"dataset": ev.config.data.name, "split": ev.config.data.eval_split, **ev.run(params)}
    return out

  def result(self, params: Any, step: int) -> dict[str, Any]:
    """The content of `eval/step_<N>.json`: step and digests (the config's, its evaluators', the
    parameters') first, then each evaluator's metrics."""
    return {"step": int(step), "config_digest": configuration.digest(self.config),
            results.KEY: self.digest, "params_digest": params_digest(params), **self.run(params)}

  def run_and_write(self, params: Any, step: int, workdir: str) -> tuple[dict[str, float], dict[str, float]]:
    """Evaluates during training and writes the JSON. Returns (what `config.train.best_metric` can name:
    `<name>/<task>_accuracy`, and for the default evaluator also `<task>_accuracy`; every scalar as
    `eval/<name>/...` for the run's metrics record and TensorBoard)."""
    result = self.result(params, step)
    write_result(workdir, result)
    metrics, record = {}, {}
    for name in self.evaluators:
      record.update(scalars(result[name], prefix=f"eval/{name}/"))
      for task, r in result[name].items():
        if isinstance(r, dict) and "accuracy" in r:
          metrics[f"{name}/{task}_accuracy"] = r["accuracy"]
          if name == DEFAULT_EVALUATOR and not self.config.get("evals"):
            metrics[f"{task}_accuracy"] = r["accuracy"]
    logging.info("step %d eval: %s", step, metrics)
    return metrics, record


def own_evaluator_digest(workdir: str) -> str | None:
  """The evaluator digest of the run's own config (`workdir/config.json`), or None before there is one."""
  path = workdir_lib.workdir_path(workdir) / "config.json"
  if not path.exists():
    return None
  return configuration.evaluator_digest(json.loads(path.read_text()))


def result_path(workdir: str, step: int, digest: str | None) -> Any:
  """Where the result of evaluator config `digest` at `step` lives (`results.relative_path`)."""
  relative = results.relative_path(step, digest, own_evaluator_digest(workdir))
  return workdir_lib.workdir_path(workdir) / relative


def write_result(workdir: str, result: dict[str, Any]) -> str:
  """Writes the result where its evaluator config keys it (process 0 only) and returns its path.

  The run's own evaluators write `eval/step_<N>.json`; what held that file before from another evaluator
  config (an eval.py of other tasks, or written before results were keyed) moves to its own folder first
  (`results.aside_path`): no evaluator's result overwrites another's.
  """
  path = result_path(workdir, result["step"], result.get(results.KEY))
  if jax.process_index() != 0:
    return str(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  held = results.read(path) if path.exists() else None
  if held is not None and held.get(results.KEY) != result.get(results.KEY):
    aside = workdir_lib.workdir_path(workdir) / results.aside_path(held)
    aside.parent.mkdir(parents=True, exist_ok=True)
    path.replace(aside)
    logging.info("Moved %s (another evaluator config's result) to %s", path, aside)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
  tmp.replace(path)
  logging.info("Wrote %s", path)
  return str(path)


def restore_params(workdir: str, setup: Any, step: int | None = None) -> tuple[Any, int]:
  """(params, step) of the checkpoint at `step` (the latest complete one by default).

  Only the parameters are read: the optimizer moments (two thirds of an Adam state) stay on disk.
  """
  directory = checkpointing.checkpoint_dir(workdir)
  manager = checkpointing.make_manager(workdir, setup.config.train, read_only=True)
  try:
    incomplete = checkpointing.incomplete_checkpoints(directory)
    available = sorted(s for s in manager.all_steps() if str(s) not in incomplete)
    if not available:
      raise FileNotFoundError(f"no complete checkpoint under {directory}")
    if step is None:
      step = available[-1]
    elif step not in available:
      raise FileNotFoundError(f"cannot evaluate step {step}: {directory} has no complete checkpoint "
                              f"of it ({incomplete.get(str(step), 'no such checkpoint')}); complete "
                              f"checkpoints: {available}")
    where = f"{directory}/{step}"
    try:
      have = checkpointing.saved_param_shapes(manager, step)
    except FileNotFoundError:
      raise
    except Exception as e:  # noqa: BLE001 - unreadable metadata: name the checkpoint, not the parser.
      raise OSError(f"checkpoint {where} cannot be read: its state metadata "
                    f"({where}/state/_METADATA) is damaged or missing ({e!r})") from e
    checkpointing.check_compatible(have, setup.abstract_state, where)
    checksums = checkpointing.saved_checksums(manager, step)
  finally:
    manager.close()
  # A partial restore of the saved train state: only its `params` subtree is read from disk.
  target = {"params": setup.abstract_state.params}
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    try:
      restored = checkpointer.restore(
          directory / str(step) / "state",
          args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                      restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    except (OSError, ValueError) as e:
      raise OSError(f"checkpoint {where} cannot be read: {e}") from e
  checkpointing.verify_checksums({"params": restored["params"]}, checksums, where)
  logging.info("Restored the parameters of %s.", where)
  return restored["params"], int(step)


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
             setup: Any = None, evaluators: Evaluators | None = None) -> dict:
  """Restores the parameters at `step` (the latest by default), evaluates them, writes the JSON.

  Pass `setup` and `evaluators` to reuse them (and their compiled functions) across checkpoints.
  """
  setup = setup or Setup(config)
  params, step = restore_params(workdir, setup, step)
  result = (evaluators or Evaluators(setup, config)).result(params, step)
  write_result(workdir, result)
  return result
