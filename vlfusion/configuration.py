"""Run configuration: the defaults every config file starts from, model sizes, and validation.

A config file under `configs/` calls `base_config()`, applies a size with `apply_size`, sets what makes
its family, and returns the result locked. `validate` checks the resolved config before anything is built or
compiled, and raises `ConfigError` naming the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import ml_collections

from vlfusion.errors import ConfigError  # raised here, and caught by callers as configuration.ConfigError.

FUSION_FAMILIES = (
    "single_stream",
    "co_attention",
    "merged_attention",
    "one_way",
    "dual_encoder",
)
IMAGE_INPUTS = ("regions", "patches")
IMAGE_STEMS = ("linear", "conv")  # how `patches` input becomes tokens (model.image.stem).
OBJECTIVES = ("mlm", "itm", "mrm", "itc", "vqa", "pairs")
EVAL_TASKS = ("itm", "mlm", "vqa", "pairs", "itc", "retrieval")
# The head each evaluation task reads (retrieval: every caption of every image, by ITC, re-ranked by ITM).
EVAL_TASK_HEADS = {"retrieval": "itc"}


def evaluated_tasks(tasks, heads) -> list[str]:
  """The `tasks` an evaluator runs: those whose head (`EVAL_TASK_HEADS`, else the task's own) is in
  `heads`."""
  return [t for t in tasks if EVAL_TASK_HEADS.get(t, t) in heads]
POOLERS = ("text", "concat", "product")
CROSS_ORDERS = ("cross_self_ffn", "self_cross_ffn", "coattn_ffn_self")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
DTYPES = ("float32", "bfloat16", "float16")
COMPUTE_DTYPES = ("auto", *DTYPES)  # model.dtype: "auto" = bfloat16 on TPU/GPU, float32 on CPU.

# Sizes shared by every family: text stream, image stream and fusion depth.
SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=4, mlp=128, image_layers=1, fusion_layers=2),
    "small": dict(hidden=256, layers=4, heads=4, mlp=1024, image_layers=2, fusion_layers=2),
    "base": dict(hidden=768, layers=12, heads=12, mlp=3072, image_layers=5, fusion_layers=5),
}


def base_config() -> ml_collections.ConfigDict:
  """Returns the defaults shared by every run (DESIGN.md section 4), unlocked."""
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.fusion = "single_stream"
  c.model.heads = ("mlm", "itm")
  # `pre_norm`/`layer_norm_eps` of a stream (None: the model-wide value) apply to its unimodal layers;
  # ALBEF and METER pair a pre-LN ViT (eps 1e-6 / 1e-5) with a post-LN BERT.
  c.model.text = dict(
      hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, vocab_size=512, max_len=40,
      type_vocab_size=2, init_from="", pre_norm=None, layer_norm_eps=None,
  )
  c.model.image = dict(
      input="regions", hidden_size=64, num_layers=1, num_heads=4, mlp_dim=128,
      feature_dim=64, num_regions=8, box_dim=4, image_size=64, patch_size=8, init_from="",
      # How image inputs become tokens: "" = the input's default; regions: "lxmert" (LN(fc(feature)) and
      # LN(fc(box)) averaged) or "visualbert" (fc(feature) + type + position, LN; no boxes);
      # patches: "vilt" (conv patches, [CLS], interpolated positions).
      embedding="",
      # patches: "linear" (one strided convolution, ViT/ViLT) or "conv" (stride-2 3x3 convolutions with
      # LayerNorm and ReLU down to the patch grid; learns small objects from little data).
      stem="linear",
      # patches: the position table starts at normal(0, initializer_range) ("normal") or at 2-D
      # sine-cosine positions ("sincos"; still learned), which spatial questions learn from far sooner.
      position_init="normal",
      pre_norm=None, layer_norm_eps=None,
  )
  c.model.fusion_layers = 2
  # hidden_size / num_heads of cross-attention (0: the query stream's); ViLBERT: 1024 wide, 8 heads.
  c.model.cross = dict(direction="both", share_weights=False, order="cross_self_ffn", hidden_size=0,
                       num_heads=0)
  c.model.pooler = "text"  # text | concat (METER) | product (ViLBERT, dual encoder); see heads.Pooler.
  # Head settings (a head exists iff named in model.heads; objectives only weight the losses).
  c.model.mrm = dict(num_labels=0, regression=True)  # num_labels 0: no object-label classification.
  c.model.itc = dict(embed_dim=256, temperature=0.07, min_temperature=0.001, max_temperature=0.5)
  # The answer vocabulary size; 0 takes the size of the data's answer vocabulary when the run is set up.
  c.model.vqa = dict(num_answers=0)
  c.model.pre_norm = False
  c.model.layer_norm_eps = 1e-12
  # Standard deviation of every kernel and embedding table at initialisation (BERT: 0.02; narrow
  # models trained from scratch learn from pixels much sooner near 1/sqrt(width), docs/recipes.md).
  c.model.initializer_range = 0.02
  c.model.dropout = 0.1
  c.model.attention_dropout = 0.0
  c.model.dtype = "auto"  # bfloat16 on TPU/GPU, float32 on CPU (models.attention.compute_dtype).
  c.model.param_dtype = "float32"
  c.model.remat_policy = "none"
  c.model.scan_layers = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "shapes_world/tiny"
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.global_batch_size = 32
  c.data.max_text_len = 24
  # Data order, ITM negatives, masks and augmentation; None follows config.train.seed (`data_seed`).
  c.data.seed = ml_collections.FieldReference(None, field_type=int)
  c.data.itm_negative_rate = 0.5
  # Weights of ITM negative kinds (random, attribute, relation) over those a caption's form allows: its
  # own edit (attribute, or relation for a relation caption) or a same-form caption of another scene.
  c.data.itm_negative_mix = (1.0, 1.0, 1.0)
  c.data.mlm_probability = 0.15
  c.data.mlm_whole_word = False  # mask every wordpiece of a chosen word together.
  c.data.mrm_probability = 0.15  # share of regions masked for masked region modelling.
  # Shapes-world VQA training rows: sampling weights of question types, e.g. "direction:4,relation:0"
  # (types not named weigh 1; "" = each scene asks one of its questions uniformly). Evaluation keeps
  # the uniform draw.
  c.data.question_type_weights = ""
  # Real data (coco_captions, vqa_v2, image_text_jsonl): their files, and a BERT vocab.txt.
  c.data.manual_dir = ""
  c.data.vocab_path = ""  # "" = the shapes-world vocab.
  c.data.vqa_min_answer_count = 9  # VQA v2 answer vocabulary: train answers given at least this often.
  # Input ahead of the step (vlfusion.data.prefetch): worker processes building batches (0 = in the
  # training process) and batches kept waiting on the devices (0 or 1 = none). Batches do not change.
  c.data.num_workers = 0
  c.data.prefetch_batches = 2
  # Patch input (vlfusion.data.images): "square" stretches, "pad" keeps the aspect ratio and adds
  # `image_mask` (ViLT); RandAugment on training batches only (0 operations = off; magnitude 0-10).
  c.data.image_resize = "square"
  # Training on a weighted mixture (vlfusion.data.mixture): {label: {data fields..., "weight": w}};
  # empty = config.data.name alone.
  c.data.mixture = {}
  c.data.randaugment_num_ops = 0
  c.data.randaugment_magnitude = 9

  c.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)

  c.optimizer = dict(
      learning_rate=1e-3, schedule="cosine", warmup_steps=50, weight_decay=0.01,
      b1=0.9, b2=0.999, eps=1e-6, grad_clip_norm=1.0, grad_accum_steps=1,
      # Weight decay applies to kernels, never to biases or LayerNorm; embedding tables only if set.
      decay_embeddings=False,
      # Per-module learning rates: "regex:factor,..." (first re.search match on the parameter path
      # wins, e.g. "text_layers:0.1,image:0.5"); "" = none.
      lr_multipliers="",
      # Length of the warmup + decay schedule; 0 = train.num_steps. Set it to keep a schedule fixed when a
      # resumed run changes num_steps (otherwise the schedule is re-stretched to the new length).
      schedule_steps=0,
  )

  # Mesh axis sizes; -1 takes the devices left over. Rules map logical axis names to mesh axes.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Several TPU slices over the data-centre network (DCN): how many slices split each axis (a hybrid mesh;
  # data/fsdp/tensor stay the totals). Put DCN on `data`: it needs one gradient all-reduce per step.
  c.mesh.dcn_data = 1
  c.mesh.dcn_fsdp = 1
  c.mesh.dcn_tensor = 1
  c.mesh.rules = (
      ("batch", ("data", "fsdp")),
      ("vocab", "tensor"),
      ("heads", "tensor"),
      ("mlp", "tensor"),
      ("embed", "fsdp"),
      ("kv", None),
      ("length", None),
      ("layers", None),  # the leading axis of scanned layer stacks (model.scan_layers).
      ("stem", None),  # channels inside the convolutional image stem (model.image.stem='conv').
  )

  c.train = dict(
      num_steps=600, log_every_steps=50, checkpoint_every_steps=200, keep_checkpoints=3, seed=0,
      # Also keep the best `keep_best_checkpoints` by this eval metric (e.g. "itm_accuracy").
      best_metric="", best_mode="max", keep_best_checkpoints=1,
      # A non-finite loss or gradient skips the update; `stop` ends the run at once, `skip` after
      # `max_consecutive_nonfinite` bad steps in a row.
      nonfinite_policy="skip", max_consecutive_nonfinite=5,
      # ... or when more than this fraction of the steps since the last checkpoint were skipped (and at
      # least max_consecutive_nonfinite): a state that keeps producing non-finite values is suspect and
      # is never saved.
      max_nonfinite_fraction=0.5,
      # Testing aid: multiply this objective's logits by NaN at this step (-1: never).
      inject_nan_at_step=-1, inject_nan_objective="mlm",
      # Peak FLOP/s of one device, for MFU; 0 = known bf16 peaks by device kind (none on CPU).
      peak_flops_per_device=0.0,
      # Several processes without JAX's preemption service agree on a SIGTERM every this many steps.
      preemption_check_every_steps=10,
      # Trace this many steps (after the first) with jax.profiler into workdir/tensorboard; 0 = none.
      profile_steps=0,
  )
  # Evaluated when the model has the head: ITM/MLM/pair accuracy, VQA accuracy (soft score), ITC
  # retrieval R@K.
  # `retrieval` (the standard protocol: every caption of every image) is opt-in, it costs more; a
  # fusion model with an ITM head re-ranks each query's top `retrieval_rerank_k` by ITC (0: ITC only).
  c.eval = dict(every_steps=0, tasks=("itm", "mlm", "vqa", "pairs", "itc"), batch_size=64,
                retrieval_rerank_k=16)
  # Named evaluators, each over its own data, run by eval.py and every eval.every_steps in training:
  # {name: {data: {name, split, <other config.data fields>}, tasks, batch_size}}; a field left out takes
  # config.data / config.eval's. Empty: one evaluator, "default", over config.data.eval_split.
  c.evals = ml_collections.ConfigDict()
  # Where a run's parameters start (vlfusion.training.initialization): a vlfusion workdir or one
  # checkpoints/<step> directory, or a local HF directory (BERT, LXMERT, VisualBERT, ViLT); matching
  # paths and shapes are restored. Only the new task head (the heads the source lacks) may stay fresh:
  # a source of another model (fresh or unused parameters beyond the heads, or model fields that differ,
  # `model_differences`) is refused unless `allow_fresh` (a regex of parameters that may stay fresh or
  # unused) names the rest; `exclude` (a regex) leaves parameters fresh on purpose. Once the run's own
  # workdir has a checkpoint, that is resumed instead.
  c.init = dict(checkpoint="", huggingface="", exclude="", allow_fresh="")
  return c


def apply_size(config: ml_collections.ConfigDict, size: str) -> None:
  """Sets hidden sizes, depths and heads of both streams from `SIZES[size]`."""
  if size not in SIZES:
    raise ConfigError(f"unknown size {size!r} in the config argument; choose one of {sorted(SIZES)}")
  s = SIZES[size]
  for stream in (config.model.text, config.model.image):
    stream.hidden_size = s["hidden"]
    stream.num_heads = s["heads"]
    stream.mlp_dim = s["mlp"]
  config.model.text.num_layers = s["layers"]
  config.model.image.num_layers = s["image_layers"]
  config.model.fusion_layers = s["fusion_layers"]


# Data and schedule per size: tiny runs in minutes on a laptop CPU, base is a pod-scale run.
TRAIN_DEFAULTS = {
    "tiny": dict(global_batch_size=32, num_steps=2000, learning_rate=1e-3, warmup_steps=100,
                 checkpoint_every_steps=500),
    "small": dict(global_batch_size=64, num_steps=5000, learning_rate=3e-4, warmup_steps=500,
                  checkpoint_every_steps=1000),
    "base": dict(global_batch_size=256, num_steps=100_000, learning_rate=1e-4, warmup_steps=10_000,
                 checkpoint_every_steps=5000),
}


# Detector regions of the base-size data (COCO, 36 regions of 2048 features).
BASE_REGIONS = dict(feature_dim=2048, num_regions=36)


def apply_data_defaults(config: ml_collections.ConfigDict, size: str) -> None:
  """Sets the data, batch size, run length and learning rate of the pretraining run for `size`.

  tiny and small train on the shapes world; base is a pod run, so it names real data: COCO captions
  over 36 detector regions of 2048 features, with BERT's 30522-token uncased vocab. Its files are not
  shipped: the run stops before compiling with an error naming `--config.data.manual_dir` and
  `--config.data.vocab_path` until both are given. Published configs set their own base data.
  """
  d = TRAIN_DEFAULTS[size]
  config.data.name = "shapes_world/tiny"
  if size == "base":
    config.data.name = "coco_captions/regions"
    config.model.text.vocab_size = 30522
    config.model.image.update(BASE_REGIONS)
  config.data.global_batch_size = d["global_batch_size"]
  config.train.num_steps = d["num_steps"]
  config.train.checkpoint_every_steps = d["checkpoint_every_steps"]
  config.optimizer.learning_rate = d["learning_rate"]
  config.optimizer.warmup_steps = d["warmup_steps"]


def override(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets each dotted path of `overrides` ("model.fusion_layers": 2, ...) on an unlocked `config`."""
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def sized_config(arg: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """What every config file starts from: `base_config()` with the size `arg` picks (and its data
  defaults) applied, unlocked, and that size."""
  size = parse_arg(arg)["size"]
  config = base_config()
  apply_size(config, size)
  apply_data_defaults(config, size)
  return config, size


def parse_arg(arg: str | None, default_size: str = "tiny", keys: tuple[str, ...] = ()) -> dict[str, str]:
  """Parses a config argument like `tiny` or `small,family=co_attention` into a dict.

  `size` (given bare or as `size=`) is always understood; `keys` names the others the config file
  reads. Any other key, and a key given twice, is a `ConfigError`, so no part of the argument can be
  silently dropped.
  """
  out = {"size": default_size}
  given: set[str] = set()
  for part in (arg or "").split(","):
    if not part.strip():
      continue
    k, v = part.split("=", 1) if "=" in part else ("size", part)
    k = k.strip()
    if k != "size" and k not in keys:
      known = ", ".join(("size", *keys))
      raise ConfigError(f"config argument {arg!r}: unknown key {k!r}; this config understands {known}")
    if k in given:  # `tiny,size=small` or `family=a,family=b`: one of the two would be dropped.
      raise ConfigError(f"config argument {arg!r} gives {k} twice; give it once")
    given.add(k)
    out[k] = v.strip()
  return out


def _check(cond: bool, message: str) -> None:
  if not cond:
    raise ConfigError(message)


def _check_stream(stream: Any, name: str) -> None:
  for field in ("hidden_size", "num_heads", "mlp_dim"):
    _check(int(stream[field]) > 0, f"config.model.{name}.{field}={stream[field]} must be positive")
  _check(
      stream.hidden_size % stream.num_heads == 0,
      f"config.model.{name}.num_heads={stream.num_heads} does not divide "
      f"config.model.{name}.hidden_size={stream.hidden_size}",
  )
  _check(stream.num_layers >= 0, f"config.model.{name}.num_layers={stream.num_layers} is negative")


# model.image.embedding -> the image input it embeds ("" = the input's default).
IMAGE_EMBEDDINGS = {"lxmert": "regions", "visualbert": "regions", "vilt": "patches"}
# model.image.input -> the embedding "" stands for.
DEFAULT_IMAGE_EMBEDDING = {"regions": "lxmert", "patches": "vilt"}


def _check_image_embedding(image: Any) -> None:
  name = image.embedding
  if not name:
    return
  _check(
      name in IMAGE_EMBEDDINGS,
      f"config.model.image.embedding={name!r} must be '' (the input's default) or one of "
      f"{sorted(IMAGE_EMBEDDINGS)}",
  )
  _check(
      IMAGE_EMBEDDINGS[name] == image.input,
      f"config.model.image.embedding={name!r} embeds {IMAGE_EMBEDDINGS[name]}, but "
      f"config.model.image.input={image.input!r}",
  )


def resolve_mesh_shape(mesh_config: Any, num_devices: int) -> dict[str, int]:
  """Returns {data, fsdp, tensor} sizes whose product is `num_devices`, resolving one -1."""
  sizes = {ax: int(mesh_config[ax]) for ax in ("data", "fsdp", "tensor")}
  free = [ax for ax, n in sizes.items() if n == -1]
  _check(len(free) <= 1, f"only one of config.mesh.{{data,fsdp,tensor}} may be -1, got {free}")
  for ax, n in sizes.items():
    _check(n == -1 or n >= 1, f"config.mesh.{ax}={n} must be -1 or a positive integer")
  fixed = 1
  for n in sizes.values():
    if n != -1:
      fixed *= n
  if free:
    _check(
        num_devices % fixed == 0,
        f"config.mesh sizes {sizes} leave no whole number of devices for config.mesh.{free[0]}: "
        f"{num_devices} devices are not divisible by {fixed}",
    )
    sizes[free[0]] = num_devices // fixed
  _check(
      sizes["data"] * sizes["fsdp"] * sizes["tensor"] == num_devices,
      f"config.mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = "
      f"{sizes['data'] * sizes['fsdp'] * sizes['tensor']} does not match the {num_devices} "
      "available devices",
  )
  return sizes


# Size fields that must be positive integers before any arithmetic divides by them or shapes an array.
POSITIVE_SIZES = ("model.text.vocab_size", "model.text.max_len", "model.image.feature_dim",
                  "model.image.num_regions", "model.image.image_size", "model.image.patch_size",
                  "model.image.box_dim", "data.max_text_len")
# [CLS], at least one word piece, [SEP].
MIN_TEXT_LEN = 3


def _check_positive_sizes(config: ml_collections.ConfigDict) -> None:
  for dotted in POSITIVE_SIZES:
    node = config
    for part in dotted.split("."):
      node = node.get(part) if node is not None and part in node else None
    if node is None:
      continue
    _check(isinstance(node, int) and not isinstance(node, bool) and node > 0,
           f"config.{dotted}={node!r} must be a positive integer")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises `ConfigError` naming the field when the config cannot work; builds and compiles nothing."""
  m = config.model
  _check_positive_sizes(config)
  _check(config.data.max_text_len >= MIN_TEXT_LEN,
         f"config.data.max_text_len={config.data.max_text_len} leaves no room for a word between [CLS] "
         f"and [SEP]; it must be >= {MIN_TEXT_LEN}")
  _check(
      m.fusion in FUSION_FAMILIES,
      f"config.model.fusion={m.fusion!r} is not a fusion family; choose one of {FUSION_FAMILIES}",
  )
  _check(
      m.image.input in IMAGE_INPUTS,
      f"config.model.image.input={m.image.input!r} must be one of {IMAGE_INPUTS}",
  )
  _check_image_embedding(m.image)
  _check_stream(m.text, "text")
  _check_stream(m.image, "image")
  if m.fusion in ("single_stream", "merged_attention"):
    _check(
        m.text.hidden_size == m.image.hidden_size,
        f"config.model.fusion={m.fusion!r} needs one width: config.model.text.hidden_size="
        f"{m.text.hidden_size} differs from config.model.image.hidden_size={m.image.hidden_size}",
    )
  _check(m.fusion_layers >= 0, f"config.model.fusion_layers={m.fusion_layers} is negative")
  _validate_model_extras(m)
  for stream in ("text", "image"):
    _check(not (m[stream].init_from and m.scan_layers),
           f"config.model.{stream}.init_from={m[stream].init_from!r} with "
           "config.model.scan_layers=True is not supported: checkpoints load into unrolled layers; "
           "set scan_layers=False")
  _check(
      m.cross.direction in ("both", "text_to_image"),
      f"config.model.cross.direction={m.cross.direction!r} must be 'both' or 'text_to_image'",
  )
  _check(
      m.cross.order in CROSS_ORDERS,
      f"config.model.cross.order={m.cross.order!r} must be one of "
      "'cross_self_ffn' (LXMERT), 'self_cross_ffn' (METER), 'coattn_ffn_self' (ViLBERT)",
  )
  if m.cross.share_weights:
    _check(
        m.text.hidden_size == m.image.hidden_size,
        "config.model.cross.share_weights=True needs config.model.text.hidden_size == "
        "config.model.image.hidden_size",
    )
  _check(m.dtype in COMPUTE_DTYPES, f"config.model.dtype={m.dtype!r} must be one of {COMPUTE_DTYPES}")
  _check(m.param_dtype in DTYPES, f"config.model.param_dtype={m.param_dtype!r} must be one of {DTYPES}")
  _check(
      m.remat_policy in REMAT_POLICIES,
      f"config.model.remat_policy={m.remat_policy!r} must be one of {REMAT_POLICIES}",
  )
  for rate in ("dropout", "attention_dropout"):
    _check(0.0 <= m[rate] < 1.0, f"config.model.{rate}={m[rate]} must be in [0, 1)")
  stem = m.image.stem
  _check(stem in IMAGE_STEMS, f"config.model.image.stem={stem!r} must be one of {IMAGE_STEMS}")
  position_init = m.image.position_init
  _check(position_init in ("normal", "sincos"),
         f"config.model.image.position_init={position_init!r} must be 'normal' or 'sincos'")
  _check(position_init == "normal" or (m.image.input == "patches" and m.image.hidden_size % 4 == 0),
         f"config.model.image.position_init='sincos' needs config.model.image.input='patches' and "
         f"config.model.image.hidden_size={m.image.hidden_size} divisible by 4")
  if m.image.input == "patches":
    _check(
        m.image.image_size % m.image.patch_size == 0,
        f"config.model.image.patch_size={m.image.patch_size} does not divide "
        f"config.model.image.image_size={m.image.image_size}",
    )
    p = m.image.patch_size
    _check(stem != "conv" or (p >= 2 and p & (p - 1) == 0),
           f"config.model.image.stem='conv' halves the image per convolution, so "
           f"config.model.image.patch_size={p} must be a power of two (>= 2)")
    if stem == "conv":
      # The stem's channels per stage, as `embeddings.ConvStem` sets them; GroupNorm splits each into
      # groups of 8, which must divide it (flax would fail while tracing the model).
      stages = p.bit_length() - 1
      channels = [max(m.image.hidden_size // 2 ** (stages - 1 - i), 16) for i in range(stages)]
      bad = [c for c in channels if c % max(c // 8, 1)]
      _check(not bad, f"config.model.image.stem='conv' with config.model.image.hidden_size="
             f"{m.image.hidden_size}: the stem's stages of {channels} channels cannot be cut into "
             f"GroupNorm groups of 8 ({bad}); a multiple of {8 * 2 ** (stages - 1)} works")
  else:
    _check(stem == "linear",
           f"config.model.image.stem={stem!r} applies to pixels, but config.model.image.input="
           f"{m.image.input!r}; leave it 'linear' or use input='patches'")
  _check(
      config.data.max_text_len <= m.text.max_len,
      f"config.data.max_text_len={config.data.max_text_len} exceeds the position table "
      f"config.model.text.max_len={m.text.max_len}",
  )

  for name in config.objectives:
    _check(name in OBJECTIVES, f"config.objectives.{name} is not an objective; known: {OBJECTIVES}")
    weight = config.objectives[name]
    _check(weight >= 0, f"config.objectives.{name}={weight} must be >= 0")
    if weight > 0:
      _check(
          name in m.heads,
          f"config.objectives.{name}={weight} needs the head {name!r} in config.model.heads={m.heads}",
      )
  _check(
      any(config.objectives[n] > 0 for n in config.objectives),
      "every weight in config.objectives is 0: nothing to train",
  )
  for task in config.eval.tasks:
    _check(task in EVAL_TASKS, f"config.eval.tasks has {task!r}, not an evaluation task; known: {EVAL_TASKS}")
  if not config.get("evals"):  # the default evaluator: eval.py must be able to evaluate what train.py ran.
    _check(any(EVAL_TASK_HEADS.get(t, t) in m.heads for t in config.eval.tasks),
           f"config.eval.tasks={tuple(config.eval.tasks)}: none is a head of this model "
           f"(config.model.heads={tuple(m.heads)}); evaluable tasks: {EVAL_TASKS}")

  o = config.optimizer
  _check(o.learning_rate > 0, f"config.optimizer.learning_rate={o.learning_rate} must be positive")
  _check(
      o.schedule in ("cosine", "linear", "constant"),
      f"config.optimizer.schedule={o.schedule!r} must be 'cosine', 'linear' or 'constant'",
  )
  _check(o.warmup_steps >= 0, f"config.optimizer.warmup_steps={o.warmup_steps} is negative")
  _check(o.grad_accum_steps >= 1, f"config.optimizer.grad_accum_steps={o.grad_accum_steps} < 1")
  _check(o.weight_decay >= 0, f"config.optimizer.weight_decay={o.weight_decay} is negative")
  _check(o.grad_clip_norm >= 0, f"config.optimizer.grad_clip_norm={o.grad_clip_norm} is negative "
         "(0 turns clipping off)")
  if "lr_multipliers" in o:
    from vlfusion.training.optimizer import parse_lr_multipliers  # imports optax; raises ConfigError.

    parse_lr_multipliers(o.lr_multipliers)

  t = config.train
  _check(t.num_steps >= 1, f"config.train.num_steps={t.num_steps} must be >= 1")
  _check(t.log_every_steps >= 1, f"config.train.log_every_steps={t.log_every_steps} must be >= 1")
  _check(
      t.nonfinite_policy in ("skip", "stop"),
      f"config.train.nonfinite_policy={t.nonfinite_policy!r} must be 'skip' or 'stop'",
  )
  _check(
      t.max_consecutive_nonfinite >= 1,
      f"config.train.max_consecutive_nonfinite={t.max_consecutive_nonfinite} must be >= 1",
  )
  fraction = t.max_nonfinite_fraction
  _check(0.0 < fraction <= 1.0, f"config.train.max_nonfinite_fraction={fraction} must be in (0, 1]")
  _check(t.peak_flops_per_device >= 0,
         f"config.train.peak_flops_per_device={t.peak_flops_per_device} is negative")
  _check(
      t.checkpoint_every_steps >= 1,
      f"config.train.checkpoint_every_steps={t.checkpoint_every_steps} must be >= 1",
  )
  # orbax deletes every checkpoint with max_to_keep < 1: a setting must never cost the run its state.
  _check(isinstance(t.keep_checkpoints, int) and t.keep_checkpoints >= 1,
         f"config.train.keep_checkpoints={t.keep_checkpoints!r} must be >= 1 (the latest checkpoints kept; "
         "fewer would delete every checkpoint, and a restart would begin at step 0)")
  keep_best = t.keep_best_checkpoints
  _check(isinstance(keep_best, int) and keep_best >= 1,
         f"config.train.keep_best_checkpoints={keep_best!r} must be >= 1")

  _validate_init(config)
  _validate_data(config.data, config.train.num_steps)
  b = config.data.global_batch_size
  _check(b >= 1, f"config.data.global_batch_size={b} must be >= 1")
  _check(
      b % o.grad_accum_steps == 0,
      f"config.data.global_batch_size={b} is not divisible by "
      f"config.optimizer.grad_accum_steps={o.grad_accum_steps}",
  )
  if num_devices is not None:
    sizes = resolve_mesh_shape(config.mesh, num_devices)
    batch_shards = sizes["data"] * sizes["fsdp"]
    _check(
        (b // o.grad_accum_steps) % batch_shards == 0,
        f"config.data.global_batch_size={b} (per micro-batch {b // o.grad_accum_steps}) is not "
        f"divisible by the data-parallel size config.mesh.data x config.mesh.fsdp = {batch_shards}",
    )
    e = config.eval.batch_size
    _check(
        e >= 1 and e % batch_shards == 0,
        f"config.eval.batch_size={e} is not divisible by the data-parallel size "
        f"config.mesh.data x config.mesh.fsdp = {batch_shards}",
    )
  _validate_evals(config, batch_shards if num_devices is not None else 1)
  _refuse_inert_fields(config)  # last: a value that cannot work is the first thing to hear about.


def _validate_model_extras(m: Any) -> None:
  """Per-stream norms, cross-attention sizes, pooler, family constraints and head settings."""
  for stream in ("text", "image"):
    s = m[stream]
    if s.pre_norm is not None:
      _check(isinstance(s.pre_norm, bool),
             f"config.model.{stream}.pre_norm={s.pre_norm!r} must be True, False or None")
    if s.layer_norm_eps is not None:
      _check(s.layer_norm_eps > 0, f"config.model.{stream}.layer_norm_eps={s.layer_norm_eps} must be > 0")
  _check(m.layer_norm_eps > 0, f"config.model.layer_norm_eps={m.layer_norm_eps} must be > 0")
  _check(m.initializer_range > 0, f"config.model.initializer_range={m.initializer_range} must be > 0")
  cross = m.cross
  _check(cross.hidden_size >= 0 and cross.num_heads >= 0,
         f"config.model.cross.hidden_size={cross.hidden_size} and config.model.cross.num_heads="
         f"{cross.num_heads} must be >= 0 (0: the query stream's)")
  if cross.hidden_size > 0:
    heads = cross.num_heads or min(m.text.num_heads, m.image.num_heads)
    _check(cross.hidden_size % heads == 0,
           f"config.model.cross.num_heads={heads} does not divide "
           f"config.model.cross.hidden_size={cross.hidden_size}")
  pooler = m.pooler
  _check(pooler in POOLERS, f"config.model.pooler={pooler!r} must be one of {POOLERS}")
  for head in m.heads:
    _check(head in OBJECTIVES, f"config.model.heads has {head!r}, not a head; known: {OBJECTIVES}")
  if m.fusion == "dual_encoder":
    _check(m.fusion_layers == 0,
           f"config.model.fusion_layers={m.fusion_layers}: the dual encoder has no fusion layers; set 0")
    needs_both = sorted(set(m.heads) & {"itm", "vqa", "pairs"})
    _check(not needs_both or pooler != "text",
           f"config.model.pooler='text' sees no image in a dual encoder, but heads {needs_both} read "
           "the pooled output; use 'product' or 'concat'")
  if "mrm" in m.heads:
    _check(m.image.input == "regions",
           f"config.model.heads has 'mrm' but config.model.image.input={m.image.input!r}; masked "
           "region modelling needs 'regions'")
    _check(m.mrm.num_labels >= 0, f"config.model.mrm.num_labels={m.mrm.num_labels} must be >= 0")
    _check(m.mrm.regression or m.mrm.num_labels > 0,
           "config.model.heads has 'mrm' but config.model.mrm.regression=False and "
           "config.model.mrm.num_labels=0: nothing to predict")
  if "itc" in m.heads:
    itc = m.itc
    _check(itc.embed_dim > 0, f"config.model.itc.embed_dim={itc.embed_dim} must be positive")
    _check(0 < itc.min_temperature <= itc.temperature <= itc.max_temperature,
           f"config.model.itc.temperature={itc.temperature} must lie in [config.model.itc."
           f"min_temperature={itc.min_temperature}, config.model.itc.max_temperature="
           f"{itc.max_temperature}] with a positive minimum")
  if "vqa" in m.heads:
    _check(m.vqa.num_answers >= 0,
           f"config.model.vqa.num_answers={m.vqa.num_answers} must be the size of the answer "
           "vocabulary, or 0 to take it from the data")


# Families whose encoder has cross-attention sized by model.cross.hidden_size / num_heads.
_CROSS_SIZED = ("co_attention", "one_way")


def _refuse_inert_fields(config: ml_collections.ConfigDict) -> None:
  """Refuses a field set to a value that the configured model or run would never read.

  A knob that silently does nothing is worse than an error: an ablation over it compares identical
  runs. A field counts as set when it differs from its neutral value (`base_config()`'s default, or the
  value that means "not used"); head settings (model.mrm/itc/vqa) stay free, as a fine-tuning config
  carries the pretraining family's model over to other heads.
  """
  m, defaults = config.model, base_config().model
  fusion = m.fusion
  # model.cross: the co-attention layer's knobs; one_way reads only the cross-attention sizes.
  if fusion != "co_attention":
    for field in ("order", "direction", "share_weights"):
      _check(m.cross[field] == defaults.cross[field],
             f"config.model.cross.{field}={m.cross[field]!r} does nothing: only "
             f"config.model.fusion='co_attention' reads it (this model is {fusion!r}); leave it "
             f"{defaults.cross[field]!r}")
  if fusion not in _CROSS_SIZED:
    for field in ("hidden_size", "num_heads"):
      _check(not m.cross[field],
             f"config.model.cross.{field}={m.cross[field]} does nothing: {fusion!r} has no "
             "cross-attention; leave it 0")
  if m.cross.share_weights:
    _check(m.cross.order == "cross_self_ffn",
           f"config.model.cross.share_weights=True does nothing with config.model.cross.order="
           f"{m.cross.order!r}: only 'cross_self_ffn' (LXMERT) has one cross-attention per direction to "
           "share; set share_weights=False or order='cross_self_ffn'")
    _check(m.cross.direction == "both",
           "config.model.cross.share_weights=True does nothing with config.model.cross.direction="
           "'text_to_image': only one direction attends, so there is nothing to share")
  # Unimodal layers and their per-stream settings.
  if fusion == "single_stream":
    for stream in ("text", "image"):
      _check(m[stream].num_layers == 0,
             f"config.model.{stream}.num_layers={m[stream].num_layers} does nothing: single_stream has "
             "no unimodal layers (its depth is config.model.fusion_layers); set it to 0, or use "
             "fusion='merged_attention' for unimodal layers before the joint stack")
  if fusion in ("single_stream", "merged_attention"):
    joint = "the joint stack" if fusion == "single_stream" else "the joint stack and the text layers"
    for field in ("num_heads", "mlp_dim"):
      if fusion == "merged_attention" and m.image.num_layers > 0:
        break
      _check(m.image[field] == m.text[field],
             f"config.model.image.{field}={m.image[field]} does nothing: {fusion!r} with no image "
             f"layers uses config.model.text.{field}={m.text[field]} for {joint}; set them equal")
  for stream in ("text", "image"):
    if m[stream].num_layers == 0 or fusion == "single_stream":
      for field in ("pre_norm", "layer_norm_eps"):
        _check(m[stream][field] is None,
               f"config.model.{stream}.{field}={m[stream][field]} does nothing: it applies to the "
               f"{stream} stream's unimodal layers and this model has none; leave it None (the "
               f"model-wide config.model.{field} applies)")
  # The image input: fields of the other input are never read.
  # (Neutral values: the defaults of every size, so a pixel family at base keeps the regions' sizes.)
  unused = (("image_size", "patch_size") if m.image.input == "regions" else
            ("feature_dim", "num_regions", "box_dim"))
  for field in unused:
    _check(m.image[field] in (defaults.image[field], BASE_REGIONS.get(field, defaults.image[field])),
           f"config.model.image.{field}={m.image[field]} does nothing with config.model.image.input="
           f"{m.image.input!r}; leave it {defaults.image[field]}")
  d, data_defaults = config.data, base_config().data
  if m.image.input == "regions":
    for field in ("image_resize", "randaugment_num_ops"):
      _check(d[field] == data_defaults[field],
             f"config.data.{field}={d[field]!r} does nothing: it acts on pixels and "
             "config.model.image.input='regions'")
  # Data and run knobs that belong to a head or a feature that is off.
  weights = d.question_type_weights
  _check(not weights or (str(d.name).startswith("shapes_world") and config.objectives.vqa > 0),
         f"config.data.question_type_weights={weights!r} does nothing: it weighs the shapes world's VQA "
         f"question types, and this run has config.data.name={d.name!r} with "
         f"config.objectives.vqa={config.objectives.vqa}")
  for head, fields in (("mlm", ("mlm_probability", "mlm_whole_word")), ("mrm", ("mrm_probability",))):
    if head not in m.heads:
      for field in fields:
        _check(d[field] == data_defaults[field],
               f"config.data.{field}={d[field]!r} does nothing: config.model.heads={tuple(m.heads)} "
               f"has no {head!r} head")
  o = config.optimizer
  _check(not (o.decay_embeddings and o.weight_decay == 0),
         "config.optimizer.decay_embeddings=True does nothing with config.optimizer.weight_decay=0")
  t, train_defaults = config.train, base_config().train
  if not t.best_metric:
    for field in ("best_mode", "keep_best_checkpoints"):
      _check(t[field] == train_defaults[field],
             f"config.train.{field}={t[field]!r} does nothing without config.train.best_metric")
  if t.inject_nan_at_step < 0:
    _check(t.inject_nan_objective == train_defaults.inject_nan_objective,
           f"config.train.inject_nan_objective={t.inject_nan_objective!r} does nothing with "
           "config.train.inject_nan_at_step=-1")
  tasks = set(config.eval.tasks) | {task for entry in (config.get("evals") or {}).values()
                                    if isinstance(entry, (dict, ml_collections.ConfigDict))
                                    for task in entry.get("tasks", ())}
  if "retrieval" not in tasks:
    rerank = config.eval.retrieval_rerank_k
    _check(rerank == base_config().eval.retrieval_rerank_k,
           f"config.eval.retrieval_rerank_k={rerank} does nothing: no evaluator has the 'retrieval' task")


def _validate_init(config: ml_collections.ConfigDict) -> None:
  init = config.init
  checkpoint, hf = init.checkpoint, init.huggingface
  _check(not (checkpoint and hf), f"config.init.checkpoint={checkpoint!r} and config.init.huggingface="
         f"{hf!r} are both set; choose one")
  for name in ("exclude", "allow_fresh"):
    pattern = init[name]
    if not pattern:
      continue
    _check(bool(checkpoint or hf), f"config.init.{name}={pattern!r} is set but neither "
           "config.init.checkpoint nor config.init.huggingface names a source")
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"config.init.{name}={pattern!r} is not a regular expression: {e}") from e
  if checkpoint or hf:
    for stream in ("text", "image"):
      _check(not config.model[stream].init_from,
             f"config.model.{stream}.init_from={config.model[stream].init_from!r} and config.init "
             "both set parameters; use one")


# Model fields a run started from another's parameters may set differently: head settings, and fields
# that change neither parameter shapes nor what they compute (an init only draws parameters left fresh).
NON_STRUCTURAL = ("heads", "mrm", "itc", "vqa", "dropout", "attention_dropout", "initializer_range",
                  "image.position_init", "dtype", "remat_policy", "scan_layers", "text.init_from",
                  "image.init_from")


def model_differences(source: Any, model: Any) -> list[str]:
  """`model.<field>: <source's> vs <model's>` for each structural model field the two set differently.

  Both are `config.model` sections (ConfigDicts, or dicts as read back from a workdir's config.json);
  `NON_STRUCTURAL` fields and fields only one side has (a config saved before the field existed) are
  not compared. The one check of whether a checkpoint of `source` describes the model `model` builds:
  training's `config.init` and the sweep's stages share it.
  """
  a, b = _flat_fields(source), _flat_fields(model)
  return [f"model.{k}: {a[k]!r} vs {b[k]!r}" for k in sorted(set(a) & set(b))
          if a[k] != b[k] and not any(k == n or k.startswith(n + ".") for n in NON_STRUCTURAL)]


def _flat_fields(model: Any) -> dict[str, Any]:
  """{dotted field: value} of a model section, tuples as lists (as a saved config reads them back) and
  `image.embedding` resolved ("" is the input's default, as a converted HF model names it)."""
  tree = json.loads(json.dumps(model.to_dict() if hasattr(model, "to_dict") else model,
                               default=_json_default))
  flat: dict[str, Any] = {}

  def walk(node: dict[str, Any], prefix: str) -> None:
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      else:
        flat[f"{prefix}{k}"] = v

  walk(tree, "")
  if not flat.get("image.embedding") and flat.get("image.input") in DEFAULT_IMAGE_EMBEDDING:
    flat["image.embedding"] = DEFAULT_IMAGE_EMBEDDING[flat["image.input"]]  # "" and its default agree.
  return flat


EVALUATOR_FIELDS = ("data", "tasks", "batch_size")


def _validate_evals(config: ml_collections.ConfigDict, batch_shards: int) -> None:
  """Each named evaluator of `config.evals` has known fields, evaluable tasks and a usable batch size."""
  for name, entry in (config.get("evals") or {}).items():
    where = f"config.evals.{name}"
    _check(isinstance(entry, (dict, ml_collections.ConfigDict)),
           f"{where} must be a dict with fields {EVALUATOR_FIELDS}")
    for key in entry:
      _check(key in EVALUATOR_FIELDS, f"{where}.{key} is not an evaluator field; known: {EVALUATOR_FIELDS}")
    for key in entry.get("data", None) or {}:
      _check(key == "split" or key in config.data,
             f"{where}.data.{key} is neither 'split' nor a field of config.data")
    tasks = tuple(entry.get("tasks", config.eval.tasks))
    for task in tasks:
      _check(task in EVAL_TASKS, f"{where}.tasks has {task!r}, not an evaluation task; known: {EVAL_TASKS}")
    heads = evaluated_tasks(tasks, config.model.heads)
    _check(bool(heads), f"{where}.tasks={tasks}: none is a head of this model "
           f"(config.model.heads={tuple(config.model.heads)})")
    _check(len(set(heads) & {"vqa", "pairs"}) == 0 or len(set(heads)) == 1,
           f"{where}.tasks={tasks}: vqa and pairs each put their own text in a batch; evaluate them "
           f"(and {sorted(set(heads) - {'vqa', 'pairs'})}) in separate evaluators")
    size = entry.get("batch_size", config.eval.batch_size)
    _check(isinstance(size, int) and size >= 1 and size % batch_shards == 0,
           f"{where}.batch_size={size} must be a positive multiple of the data-parallel size "
           f"config.mesh.data x config.mesh.fsdp = {batch_shards}")


def _validate_data(d: Any, num_steps: int) -> None:
  seed = d.seed
  _check(seed is None or (isinstance(seed, int) and seed >= 0), f"config.data.seed={seed} must be an "
         "integer >= 0, or None to follow config.train.seed")
  if "image_resize" in d:
    _check(d.image_resize in ("square", "pad"), f"config.data.image_resize={d.image_resize!r} must be "
           "'square' or 'pad'")
  if "randaugment_magnitude" in d:
    _check(0 <= d.randaugment_magnitude <= 10, f"config.data.randaugment_magnitude="
           f"{d.randaugment_magnitude} must be in [0, 10]")
  for name in ("num_workers", "prefetch_batches", "randaugment_num_ops"):
    if name in d:
      _check(isinstance(d[name], int) and d[name] >= 0, f"config.data.{name}={d[name]} must be an "
             "integer >= 0")
  for name in ("itm_negative_rate", "mlm_probability", "mrm_probability"):
    if name in d:
      _check(0.0 <= d[name] <= 1.0, f"config.data.{name}={d[name]} must be in [0, 1]")
  weights = d.question_type_weights
  if weights:
    from vlfusion.data import questions  # numpy only.

    try:
      last_start = questions.parse_type_weight_schedule(weights)[-1][0]
    except ValueError as e:
      raise ConfigError(str(e)) from None
    _check(last_start < num_steps, f"config.data.question_type_weights={weights!r}: its "
           f"last phase starts at step {last_start}, after the run's config.train.num_steps="
           f"{num_steps}")
  if "itm_negative_mix" in d:
    mix = tuple(d.itm_negative_mix)
    _check(len(mix) == 3 and all(w >= 0 for w in mix) and sum(mix) > 0,
           f"config.data.itm_negative_mix={mix} must be 3 non-negative weights (random, attribute, "
           "relation) with a positive sum")


def data_seed(config: Any) -> int:
  """The seed of the training data (order, ITM negatives, masks, augmentation): `data.seed` when set,
  else `train.seed`, so that one seed varies a run. `config` is a ConfigDict or a saved config.json's
  dict as `complete` fills it; one saved before data.seed could be unset holds a number, which is kept."""
  seed = config["data"]["seed"]
  return int(config["train"]["seed"] if seed is None else seed)


def seeds_resolved(config: dict[str, Any]) -> dict[str, Any]:
  """A config's dict with `data.seed` as the run reads it (`data_seed`), for comparing a saved config
  with a new one: one saved when data.seed was always a number and today's unset one compare by the data
  they read."""
  return {**config, "data": {**config["data"], "seed": data_seed(config)}}


def eval_data_seed(config: Any) -> int:
  """The seed of evaluation examples' random choices: `data.seed` when set, else 0 (not `train.seed`),
  so that every seed of a sweep is scored on the same examples."""
  seed = config["data"]["seed"]
  return 0 if seed is None else int(seed)


def complete(saved: ml_collections.ConfigDict | dict[str, Any]) -> ml_collections.ConfigDict:
  """A saved config (a workdir's config.json as read, or a ConfigDict) on today's defaults, unlocked.

  Every saved value is kept, fields the saved config lacks (added since it was written) take their
  `base_config()` value, and what the saved config has beyond the defaults (named evaluators, a mixture,
  a field since removed) stays. The one place a config read back meets today's fields: its readers use
  plain attribute access, never a `.get(field, default)` that would write a default a second time.
  """
  saved = saved.to_dict() if hasattr(saved, "to_dict") else saved
  defaults = json.loads(to_json(base_config()))
  return ml_collections.ConfigDict(_filled(json.loads(json.dumps(saved, default=_json_default)), defaults))


def _filled(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
  """`saved` with each key of `defaults` it lacks added, section by section."""
  out = dict(saved)
  for key, default in defaults.items():
    if key not in out:
      out[key] = default
    elif isinstance(default, dict) and isinstance(out[key], dict):
      out[key] = _filled(out[key], default)
  return out


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as canonical JSON (sorted keys), as written to workdir/config.json."""
  return json.dumps(config.to_dict(), sort_keys=True, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
  if isinstance(value, tuple):
    return list(value)
  return str(value)


def digest(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """SHA-256 of the canonical JSON of the config (a ConfigDict, or a saved config.json's dict)."""
  text = to_json(config) if hasattr(config, "to_dict") else json.dumps(
      config, sort_keys=True, indent=2, default=_json_default)
  return hashlib.sha256(text.encode()).hexdigest()


# Fields that cannot change an evaluation's numbers: where the data lives and how fast it is read, and
# what only training batches use (their size, mixture and augmentation). Every other field of `data`,
# all of `model`, `objectives` (which rows and keys an eval batch holds), `eval` but its cadence, and
# `evals` key a result; a field added later keys it too until it is named here.
EVAL_NEUTRAL_DATA = ("data_dir", "num_workers", "prefetch_batches", "global_batch_size", "mixture",
                     "randaugment_num_ops", "randaugment_magnitude", "question_type_weights")
EVAL_NEUTRAL_EVAL = ("every_steps",)


def evaluator_fields(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The part of a config that decides an evaluation's numbers (model, evaluation data and seed, tasks,
  batch sizes, named evaluators), as canonical JSON values: what `evaluator_digest` hashes."""
  c = config.to_dict() if hasattr(config, "to_dict") else config
  c = json.loads(json.dumps(c, sort_keys=True, default=_json_default))
  data = {k: v for k, v in (c.get("data") or {}).items() if k not in EVAL_NEUTRAL_DATA}
  # Evaluation draws with data.seed, or 0 when it follows train.seed: a sweep's seeds share one key.
  data["seed"] = 0 if data.get("seed") is None else int(data["seed"])
  return {"model": c.get("model") or {}, "data": data, "objectives": c.get("objectives") or {},
          "eval": {k: v for k, v in (c.get("eval") or {}).items() if k not in EVAL_NEUTRAL_EVAL},
          "evals": c.get("evals") or {}}


def evaluator_digest(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """SHA-256 of `evaluator_fields`: the key of an evaluation result, so that results of different
  evaluator configs never stand in for each other, while a run's seed, schedule or mesh leave it alone."""
  return hashlib.sha256(json.dumps(evaluator_fields(config), sort_keys=True).encode()).hexdigest()
