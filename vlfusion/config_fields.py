"""Every config field, declared once: default, one-line doc, type, check, when it is read, and whether it
may change on resume or changes the model's structure.

`configuration.base_config()` is built from `FIELDS`; `configuration.validate` runs each field's type and
check from here, and refuses a field set where `read_when` says nothing reads it; the fields a resumed run
may change (`resumable_changes`, training.workdir.RESUMABLE_CHANGES) and the model fields a run started
from another's parameters may set differently (`non_structural`, configuration.NON_STRUCTURAL) are read
off the declarations. Adding a field is one entry in `FIELDS` (docs/design.md, "Configuration"); the field
reference docs/config.md is generated from it (`python -m vlfusion.config_doc > docs/config.md`).

Imports nothing of vlfusion but its errors at module level, so every module can read it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from vlfusion.errors import ConfigError

FUSION_FAMILIES = (
    "single_stream",
    "co_attention",
    "merged_attention",
    "one_way",
    "dual_encoder",
)
IMAGE_INPUTS = ("regions", "patches")
IMAGE_STEMS = ("linear", "conv")  # how `patches` input becomes tokens (model.image.stem).
POOLERS = ("text", "concat", "product")
CROSS_ORDERS = ("cross_self_ffn", "self_cross_ffn", "coattn_ffn_self")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
DTYPES = ("float32", "bfloat16", "float16")
COMPUTE_DTYPES = ("auto", *DTYPES)  # model.dtype: "auto" = bfloat16 on TPU/GPU, float32 on CPU.
# model.image.embedding -> the image input it embeds ("" = the input's default).
IMAGE_EMBEDDINGS = {"lxmert": "regions", "visualbert": "regions", "vilt": "patches"}
# model.image.input -> the embedding "" stands for.
DEFAULT_IMAGE_EMBEDDING = {"regions": "lxmert", "patches": "vilt"}
# Detector regions of the base-size data (COCO, 36 regions of 2048 features).
BASE_REGIONS = dict(feature_dim=2048, num_regions=36)
# Families whose encoder has cross-attention sized by model.cross.hidden_size / num_heads.
CROSS_SIZED = ("co_attention", "one_way")

# A check takes the value and returns what is wrong with it ("must be >= 1"), or None when it is fine.
Check = Callable[[Any], "str | None"]


@dataclasses.dataclass(frozen=True)
class When:
  """A condition under which a field is read: `test(config)`, and `why` says what reads the field when the
  test fails, e.g. "only config.model.fusion='co_attention' reads it": a string formatted with `c=config`
  and `field=<the field's last name>`, or a function of the config."""

  test: Callable[[Any], bool]
  why: str | Callable[[Any], str]

  def reason(self, config: Any, field: str) -> str:
    return self.why(config) if callable(self.why) else self.why.format(c=config, field=field)


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field.

  Attributes:
    default: its value in `base_config()`; a None default is a typed `FieldReference`, so that
      `--config.<field>=` can set it.
    doc: one line for docs/config.md.
    type: the Python type of its value (int, float, str, bool, tuple, dict); None is allowed when the
      default is None; a float field takes an int; a tuple field a list (a saved config's).
    checks: what must hold of the value alone, in order (`validate` reports the first failing one as
      `config.<field>=<value> <what is wrong>`). Checks across fields are functions in `configuration`.
    read_when: conditions, all of which must hold for anything to read the field; where one fails, a
      value other than `neutral` is refused as doing nothing.
    neutral: the values that mean "not used" when the field is not read (default: the default alone), or
      a function of the config returning them.
    resumable: a resumed run may change it (training.workdir.RESUMABLE_CHANGES).
    structural: (model fields) it changes the parameters' shapes or what they compute, so a checkpoint of
      a model that sets it differently describes another model (configuration.model_differences).
  """

  default: Any
  doc: str
  type: type
  checks: tuple[Check, ...] = ()
  read_when: tuple[When, ...] = ()
  neutral: tuple[Any, ...] | Callable[[Any], tuple[Any, ...]] | None = None
  resumable: bool = False
  structural: bool = True

  def neutral_values(self, config: Any) -> tuple[Any, ...]:
    if self.neutral is None:
      return (self.default,)
    return self.neutral(config) if callable(self.neutral) else self.neutral


# --- Checks of one value. Each returns the end of the message, after `config.<field>=<value> `.

def at_least(low: int | float, text: str | None = None) -> Check:
  return lambda v: None if v >= low else (text or f"must be >= {low}")


def above(low: int | float, text: str | None = None) -> Check:
  return lambda v: None if v > low else (text or f"must be > {low}")


def between(low: float, high: float, text: str) -> Check:
  """low <= v <= high."""
  return lambda v: None if low <= v <= high else text


def one_of(choices: tuple[Any, ...], text: str | None = None) -> Check:
  return lambda v: None if v in choices else (text or f"must be one of {choices}")


def positive_int(v: Any) -> str | None:
  return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "must be a positive integer"


def non_negative_int(v: Any) -> str | None:
  return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be an integer >= 0"


def regex(v: str) -> str | None:
  try:
    re.compile(v)
  except re.error as e:
    return f"is not a regular expression: {e}"
  return None


def lr_multipliers(v: str) -> str | None:
  from vlfusion.training.optimizer import parse_lr_multipliers  # imports optax; raises ConfigError.

  parse_lr_multipliers(v)
  return None


def question_type_weights(v: str) -> str | None:
  if not v:
    return None
  from vlfusion.data import questions  # numpy only.

  try:
    questions.parse_type_weight_schedule(v)
  except ValueError as e:
    raise ConfigError(str(e)) from None  # the parser's message names the field itself.
  return None


def negative_mix(v: Any) -> str | None:
  mix = tuple(v)
  if len(mix) == 3 and all(w >= 0 for w in mix) and sum(mix) > 0:
    return None
  return "must be 3 non-negative weights (random, attribute, relation) with a positive sum"


def _image_embedding(v: str) -> str | None:
  if not v or v in IMAGE_EMBEDDINGS:
    return None
  return f"must be '' (the input's default) or one of {sorted(IMAGE_EMBEDDINGS)}"


NON_NEGATIVE = at_least(0, "is negative")
_VALIDATION_SHARE = lambda v: None if 0 <= v < 1 else "must be in [0, 1) (0: no validation split)"
_QUERY_STREAM = at_least(0, "must be >= 0 (0: the query stream's)")
POSITIVE = above(0, "must be positive")


# --- When fields are read.

def _co_attention() -> When:
  return When(lambda c: c.model.fusion == "co_attention",
              "only config.model.fusion='co_attention' reads it (this model is {c.model.fusion!r})")


CROSS_ATTENTION = When(lambda c: c.model.fusion in CROSS_SIZED,
                       "{c.model.fusion!r} has no cross-attention")
UNIMODAL_LAYERS = When(lambda c: c.model.fusion != "single_stream",
                       "single_stream has no unimodal layers (its depth is config.model.fusion_layers; "
                       "fusion='merged_attention' has unimodal layers before the joint stack)")


_SHARDS = When(lambda c: str(c.data.name).split("/")[0] == "image_text_shards",
               "only config.data.name='image_text_shards/images' reads it (this run reads "
               "{c.data.name!r}; a mixture entry sets it in its own dict)")


def _has_unimodal_layers(stream: str) -> When:
  return When(lambda c: c.model[stream].num_layers > 0 and c.model.fusion != "single_stream",
              f"it applies to the {stream} stream's unimodal layers and this model has none (the "
              f"model-wide config.model.{{field}} applies)")


def _own_image_layers() -> When:
  """Image num_heads / mlp_dim: a single-stream model, or merged attention without image layers, uses
  the text's for its joint stack."""
  def test(c: Any) -> bool:
    fusion = c.model.fusion
    return not (fusion == "single_stream" or (fusion == "merged_attention" and c.model.image.num_layers == 0))
  return When(test, "{c.model.fusion!r} with no image layers uses config.model.text.{field} for its joint "
              "stack")


def _input(kind: str) -> When:
  return When(lambda c: c.model.image.input == kind,
              f"only config.model.image.input={kind!r} reads it (this model's is {{c.model.image.input!r}})")


def _image_self_attention(c: Any) -> bool:
  """Whether the model has self-attention over the image tokens alone (unimodal image layers, or
  co-attention's image layers in the fusion stack)."""
  fusion = c.model.fusion
  if fusion == "single_stream":
    return False
  return c.model.image.num_layers > 0 or (fusion == "co_attention" and c.model.fusion_layers > 0)


IMAGE_SELF_ATTENTION = When(_image_self_attention, "{c.model.fusion!r} has no self-attention over the "
                            "image tokens alone here (single_stream never; otherwise it needs "
                            "config.model.image.num_layers > 0)")


PIXELS = When(lambda c: c.model.image.input != "regions",
              "it acts on pixels and config.model.image.input='regions'")


def _head(name: str) -> When:
  return When(lambda c: name in c.model.heads,
              lambda c: f"config.model.heads={tuple(c.model.heads)} has no {name!r} head")


def _evaluates_retrieval(c: Any) -> bool:
  tasks = set(c.eval.tasks)
  for entry in (c.get("evals") or {}).values():
    if hasattr(entry, "get"):
      tasks |= set(entry.get("tasks", ()))
  return "retrieval" in tasks


_BEST = When(lambda c: bool(c.train.best_metric), "only read with config.train.best_metric set")
_RATE = between(0.0, 1.0, "must be in [0, 1]")
_DROPOUT = lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1)"  # noqa: E731


def _stream(stream: str, hidden: int, layers: int, heads: int, mlp: int) -> dict[str, Field]:
  """The width, depth and heads of one stream (text or image), as every family shares them."""
  s = f"model.{stream}"
  own = (_own_image_layers(),) if stream == "image" else ()
  return {
      f"{s}.hidden_size": Field(hidden, f"width of the {stream} stream", int, (POSITIVE,)),
      f"{s}.num_layers": Field(layers, f"{stream}-only layers before fusion (0 in single_stream)", int,
                               (NON_NEGATIVE,), (UNIMODAL_LAYERS,), neutral=(0,)),
      f"{s}.num_heads": Field(heads, f"attention heads of the {stream} stream", int, (POSITIVE,), own,
                              neutral=(lambda c: (c.model.text.num_heads,)) if own else None),
      f"{s}.mlp_dim": Field(mlp, f"hidden width of the {stream} stream's MLP", int, (POSITIVE,), own,
                            neutral=(lambda c: (c.model.text.mlp_dim,)) if own else None),
  }


def _stream_norms(stream: str) -> dict[str, Field]:
  s = f"model.{stream}"
  when = (_has_unimodal_layers(stream),)
  return {
      f"{s}.pre_norm": Field(None, f"LayerNorm before each sublayer in the {stream} stream's unimodal "
                             "layers; None: config.model.pre_norm", bool, read_when=when),
      f"{s}.layer_norm_eps": Field(None, f"LayerNorm epsilon of the {stream} stream's unimodal layers; "
                                   "None: config.model.layer_norm_eps", float, (above(0),), when),
  }


FIELDS: dict[str, Field] = {
    # model
    "model.fusion": Field("single_stream", "fusion family: " + ", ".join(FUSION_FAMILIES), str,
                          (one_of(FUSION_FAMILIES,
                                  f"is not a fusion family; choose one of {FUSION_FAMILIES}"),)),
    "model.heads": Field(("mlm", "itm"), "the task heads the model has (objectives only weight their "
                         "losses)", tuple, structural=False),
    **_stream("text", 64, 2, 4, 128),
    "model.text.vocab_size": Field(512, "word-piece vocabulary size", int, (positive_int,)),
    "model.text.max_len": Field(40, "length of the text position table", int, (positive_int,)),
    "model.text.type_vocab_size": Field(2, "token type (segment) embeddings", int),
    "model.text.init_from": Field("", "a checkpoint the text stream starts from ('' = random)", str,
                                  structural=False),
    **_stream_norms("text"),
    "model.image.input": Field("regions", "image input: regions (detector features) or patches (pixels)",
                               str, (one_of(IMAGE_INPUTS),)),
    **_stream("image", 64, 1, 4, 128),
    "model.image.feature_dim": Field(64, "width of a region feature", int, (positive_int,),
                                     (_input("regions"),), neutral=(64, BASE_REGIONS["feature_dim"])),
    "model.image.num_regions": Field(8, "regions per image", int, (positive_int,), (_input("regions"),),
                                     neutral=(8, BASE_REGIONS["num_regions"])),
    "model.image.box_dim": Field(4, "values per region box", int, (positive_int,), (_input("regions"),)),
    "model.image.image_size": Field(64, "side of the square input image, pixels", int, (positive_int,),
                                    (_input("patches"),)),
    "model.image.patch_size": Field(8, "side of a patch, pixels", int, (positive_int,), (_input("patches"),)),
    "model.image.init_from": Field("", "a checkpoint the image stream starts from ('' = random)", str,
                                   structural=False),
    "model.image.embedding": Field("", "how image inputs become tokens: '' = the input's default; regions: "
                                   "lxmert or visualbert; patches: vilt", str, (_image_embedding,)),
    "model.image.stem": Field("linear", "patches: one strided convolution (linear, ViT) or stride-2 3x3 "
                              "convolutions down to the patch grid (conv)", str, (one_of(IMAGE_STEMS),)),
    "model.image.stem_blocks": Field(0, "conv stem: residual 3x3 convolution blocks after each stride-2 "
                                     "convolution (0 = none); deepens the stem without changing its grid",
                                     int, (non_negative_int,),
                                     (_input("patches"), When(lambda c: c.model.image.stem == "conv",
                                                              "only config.model.image.stem='conv' reads it "
                                                              "(this model's is {c.model.image.stem!r})"))),
    "model.image.position_init": Field("normal", "patches: position table starts at normal(0, "
                                       "initializer_range) or at 2-D sine-cosine positions (sincos)", str,
                                       (one_of(("normal", "sincos"), "must be 'normal' or 'sincos'"),),
                                       structural=False),
    "model.image.relative_position": Field("none", "patches: none, or bias_2d (a learned per-head bias "
                                           "indexed by two patches' (dy, dx), added in the image "
                                           "stream's self-attention, as Swin/BEiT)", str,
                                           (one_of(("none", "bias_2d"), "must be 'none' or 'bias_2d'"),),
                                           (_input("patches"), IMAGE_SELF_ATTENTION)),
    **_stream_norms("image"),
    "model.fusion_layers": Field(2, "depth of the fusion stack", int, (NON_NEGATIVE,)),
    "model.cross.direction": Field("both", "co-attention: both streams attend to each other, or "
                                   "text_to_image", str,
                                   (one_of(("both", "text_to_image"), "must be 'both' or 'text_to_image'"),),
                                   (_co_attention(),)),
    "model.cross.share_weights": Field(False, "co-attention: one cross-attention shared by both directions "
                                       "(LXMERT)", bool, read_when=(
                                           _co_attention(),
                                           When(lambda c: c.model.cross.order == "cross_self_ffn",
                                                "only config.model.cross.order='cross_self_ffn' (LXMERT) has "
                                                "one cross-attention per direction to share (this order is "
                                                "{c.model.cross.order!r})"),
                                           When(lambda c: c.model.cross.direction == "both",
                                                "with config.model.cross.direction='text_to_image' only one "
                                                "direction attends, so there is nothing to share"))),
    "model.cross.order": Field("cross_self_ffn", "co-attention sublayer order: cross_self_ffn (LXMERT), "
                               "self_cross_ffn (METER), coattn_ffn_self (ViLBERT)", str,
                               (one_of(CROSS_ORDERS, "must be one of 'cross_self_ffn' (LXMERT), "
                                       "'self_cross_ffn' (METER), 'coattn_ffn_self' (ViLBERT)"),),
                               (_co_attention(),)),
    "model.cross.hidden_size": Field(0, "width of cross-attention (0: the query stream's)", int,
                                     (_QUERY_STREAM,), (CROSS_ATTENTION,)),
    "model.cross.num_heads": Field(0, "heads of cross-attention (0: the query stream's)", int,
                                   (_QUERY_STREAM,), (CROSS_ATTENTION,)),
    "model.pooler": Field("text", "pooled output: text (tanh on the text [CLS]), concat (METER) or product "
                          "(ViLBERT, dual encoder)", str, (one_of(POOLERS),)),
    "model.mrm.num_labels": Field(0, "MRM: object-label classes (0: no label classification)", int,
                                  (at_least(0),), structural=False),
    "model.mrm.regression": Field(True, "MRM: regress the masked regions' features", bool, structural=False),
    "model.itc.embed_dim": Field(256, "ITC: width of the shared embedding", int, (POSITIVE,),
                                 structural=False),
    "model.itc.temperature": Field(0.07, "ITC: initial softmax temperature (learned)", float,
                                   structural=False),
    "model.itc.min_temperature": Field(0.001, "ITC: lowest temperature", float, structural=False),
    "model.itc.max_temperature": Field(0.5, "ITC: highest temperature", float, structural=False),
    "model.vqa.num_answers": Field(0, "VQA answer vocabulary size; 0 takes the data's when the run is set up",
                                   int, (at_least(0, "must be the size of the answer vocabulary, or 0 to "
                                                  "take it from the data"),), structural=False),
    "model.pre_norm": Field(False, "LayerNorm before each sublayer (pre-LN) rather than after", bool),
    "model.layer_norm_eps": Field(1e-12, "LayerNorm epsilon", float, (above(0),)),
    "model.initializer_range": Field(0.02, "standard deviation of every kernel and embedding at "
                                     "initialisation", float, (above(0),), structural=False),
    "model.dropout": Field(0.1, "dropout rate", float, (_DROPOUT,), structural=False),
    "model.attention_dropout": Field(0.0, "dropout rate on attention weights", float, (_DROPOUT,),
                                     structural=False),
    "model.dtype": Field("auto", "compute dtype; auto = bfloat16 on TPU/GPU, float32 on CPU", str,
                         (one_of(COMPUTE_DTYPES),), structural=False),
    "model.param_dtype": Field("float32", "parameter dtype", str, (one_of(DTYPES),)),
    "model.remat_policy": Field("none", "what layers recompute in the backward pass: "
                                + ", ".join(REMAT_POLICIES), str, (one_of(REMAT_POLICIES),),
                                structural=False),
    "model.scan_layers": Field(False, "scan each layer stack (one compiled layer) rather than unroll it",
                               bool, structural=False),
    # data
    "data.name": Field("shapes_world/tiny", "dataset/config, e.g. shapes_world/tiny, coco_captions/regions, "
                       "vqa_v2/images", str),
    "data.data_dir": Field(None, "tfds data directory (None: tfds's default)", str, resumable=True),
    "data.train_split": Field("train", "split training reads", str),
    "data.eval_split": Field("validation", "split the default evaluator reads", str),
    "data.global_batch_size": Field(32, "training examples per step, over all devices", int,
                                    (at_least(1),)),
    "data.max_text_len": Field(24, "word pieces per text, with [CLS] and [SEP]", int,
                               (positive_int, at_least(3, "leaves no room for a word between [CLS] and "
                                                       "[SEP]; it must be >= 3"))),
    "data.seed": Field(None, "data order, ITM negatives, masks and augmentation; None follows "
                       "config.train.seed", int,
                       (at_least(0, "must be an integer >= 0, or None to follow config.train.seed"),)),
    "data.itm_negative_rate": Field(0.5, "share of training rows whose caption is replaced by a negative",
                                    float, (_RATE,)),
    "data.itm_negative_mix": Field((1.0, 1.0, 1.0), "weights of ITM negative kinds (random, attribute, "
                                   "relation) over those a caption's form allows", tuple, (negative_mix,)),
    "data.mlm_probability": Field(0.15, "share of word pieces masked for MLM", float, (_RATE,),
                                  (_head("mlm"),)),
    "data.mlm_whole_word": Field(False, "mask every word piece of a chosen word together", bool,
                                 read_when=(_head("mlm"),)),
    "data.mrm_probability": Field(0.15, "share of regions masked for MRM", float, (_RATE,), (_head("mrm"),)),
    "data.question_type_weights": Field(
        "", "shapes-world VQA training rows: weights of question types, e.g. 'direction:4,relation:0', "
        "phases separated by ';'", str, (question_type_weights,),
        (When(lambda c: str(c.data.name).split("/")[0] == "shapes_world" and c.objectives.vqa > 0,
              "it weighs the shapes world's VQA question types, and this run has config.data.name="
              "{c.data.name!r} with config.objectives.vqa={c.objectives.vqa}"),)),
    "data.manual_dir": Field("", "real data's source files", str),
    "data.shards": Field("", "image_text_shards: comma-separated shard paths, globs or {00000..00099} "
                         "ranges, relative to manual_dir ('' = its *.tar, else its *.parquet)", str,
                         read_when=(_SHARDS,)),
    "data.shards_validation_share": Field(0.01, "image_text_shards: share of samples (by key hash) in the "
                                          "validation split; 0 = none", float,
                                          (_VALIDATION_SHARE,), (_SHARDS,)),
    "data.vocab_path": Field("", "a BERT vocab.txt ('' = the shapes-world vocab)", str),
    "data.vqa_min_answer_count": Field(9, "VQA v2 answer vocabulary: training answers given at least this "
                                       "often", int),
    "data.num_workers": Field(0, "worker processes building batches (0 = in the training process)", int,
                              (non_negative_int,), resumable=True),
    "data.prefetch_batches": Field(2, "batches kept waiting on the devices (0 or 1 = none)", int,
                                   (non_negative_int,), resumable=True),
    "data.image_resize": Field("square", "patches: square stretches, pad keeps the aspect ratio (ViLT)", str,
                               (one_of(("square", "pad"), "must be 'square' or 'pad'"),), (PIXELS,)),
    "data.mixture": Field({}, "training on a weighted mixture: {label: {data fields..., weight}}; empty = "
                          "config.data.name alone", dict),
    "data.randaugment_num_ops": Field(0, "RandAugment operations per training image (0 = off)", int,
                                      (non_negative_int,), (PIXELS,)),
    "data.randaugment_magnitude": Field(9, "RandAugment magnitude, 0-10", int,
                                        (between(0, 10, "must be in [0, 10]"),)),
    # objectives (loss weights; 0 turns one off)
    "objectives.mlm": Field(1.0, "weight of masked language modelling", float, (at_least(0),)),
    "objectives.itm": Field(1.0, "weight of image-text matching", float, (at_least(0),)),
    "objectives.mrm": Field(0.0, "weight of masked region modelling", float, (at_least(0),)),
    "objectives.itc": Field(0.0, "weight of image-text contrastive learning", float, (at_least(0),)),
    "objectives.vqa": Field(0.0, "weight of visual question answering", float, (at_least(0),)),
    "objectives.pairs": Field(0.0, "weight of NLVR2-style image-pair statements", float, (at_least(0),)),
    "objectives.ve": Field(0.0, "weight of visual entailment (image + hypothesis -> 3 labels)", float,
                           (at_least(0),)),
    # optimizer
    "optimizer.learning_rate": Field(1e-3, "peak learning rate", float, (POSITIVE,)),
    "optimizer.schedule": Field("cosine", "decay after warmup: cosine, linear or constant", str,
                                (one_of(("cosine", "linear", "constant"),
                                        "must be 'cosine', 'linear' or 'constant'"),)),
    "optimizer.warmup_steps": Field(50, "linear warmup, steps", int, (NON_NEGATIVE,)),
    "optimizer.weight_decay": Field(0.01, "AdamW weight decay (kernels only)", float, (NON_NEGATIVE,)),
    "optimizer.b1": Field(0.9, "Adam beta1", float),
    "optimizer.b2": Field(0.999, "Adam beta2", float),
    "optimizer.eps": Field(1e-6, "Adam epsilon", float),
    "optimizer.grad_clip_norm": Field(1.0, "global gradient norm clip (0 = off)", float,
                                      (at_least(0, "is negative (0 turns clipping off)"),)),
    "optimizer.grad_accum_steps": Field(1, "micro-batches per step", int, (at_least(1, "< 1"),)),
    "optimizer.decay_embeddings": Field(False, "also decay embedding tables", bool, read_when=(
        When(lambda c: c.optimizer.weight_decay != 0, "config.optimizer.weight_decay=0 decays nothing"),)),
    "optimizer.lr_multipliers": Field("", "per-module learning rates, 'regex:factor,...' (first match on the "
                                      "parameter path wins)", str, (lr_multipliers,)),
    "optimizer.schedule_steps": Field(0, "length of warmup + decay (0 = config.train.num_steps)", int,
                                      resumable=True),
    # mesh
    "mesh.data": Field(-1, "data-parallel devices (-1: the devices left over)", int, resumable=True),
    "mesh.fsdp": Field(1, "devices parameters are sharded over (-1: the devices left over)", int,
                       resumable=True),
    "mesh.tensor": Field(1, "tensor-parallel devices (-1: the devices left over)", int, resumable=True),
    "mesh.dcn_data": Field(1, "TPU slices splitting the data axis (over DCN)", int, resumable=True),
    "mesh.dcn_fsdp": Field(1, "TPU slices splitting the fsdp axis", int, resumable=True),
    "mesh.dcn_tensor": Field(1, "TPU slices splitting the tensor axis", int, resumable=True),
    "mesh.rules": Field((
        ("batch", ("data", "fsdp")),
        ("vocab", "tensor"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("embed", "fsdp"),
        ("kv", None),
        ("length", None),
        ("layers", None),  # the leading axis of scanned layer stacks (model.scan_layers).
        ("stem", None),  # channels inside the convolutional image stem (model.image.stem='conv').
    ), "logical axis name -> mesh axes", tuple, resumable=True),
    # train
    "train.num_steps": Field(600, "training steps", int, (at_least(1),), resumable=True),
    "train.log_every_steps": Field(50, "metrics cadence, steps", int, (at_least(1),), resumable=True),
    "train.checkpoint_every_steps": Field(200, "checkpoint cadence, steps", int, (at_least(1),),
                                          resumable=True),
    "train.keep_checkpoints": Field(3, "latest checkpoints kept", int, (at_least(
        1, "must be >= 1 (the latest checkpoints kept; fewer would delete every checkpoint, and a restart "
        "would begin at step 0)"),), resumable=True),
    "train.seed": Field(0, "one seed for init, data order, negatives, masks and dropout", int),
    "train.best_metric": Field("", "also keep the best checkpoints by this eval metric (e.g. itm_accuracy)",
                               str, resumable=True),
    "train.best_mode": Field("max", "whether the best metric is the highest (max) or lowest (min)", str,
                             read_when=(_BEST,),
                             resumable=True),
    "train.keep_best_checkpoints": Field(1, "best checkpoints kept", int, (at_least(1),), read_when=(
        _BEST,), resumable=True),
    "train.nonfinite_policy": Field("skip", "a non-finite loss or gradient skips the update (skip) or ends "
                                    "the run (stop)", str,
                                    (one_of(("skip", "stop"), "must be 'skip' or 'stop'"),),
                                    resumable=True),
    "train.max_consecutive_nonfinite": Field(5, "skip: bad steps in a row that end the run", int,
                                             (at_least(1),), resumable=True),
    "train.max_nonfinite_fraction": Field(0.5, "skip: share of steps since the last checkpoint that ends the "
                                          "run when skipped", float,
                                          (lambda v: None if 0.0 < v <= 1.0 else "must be in (0, 1]",),
                                          resumable=True),
    "train.inject_nan_at_step": Field(-1, "testing aid: NaN logits at this step (-1: never)", int,
                                      resumable=True),
    "train.inject_nan_objective": Field("mlm", "testing aid: the objective whose logits become NaN", str,
                                        read_when=(When(lambda c: c.train.inject_nan_at_step >= 0,
                                                        "only config.train.inject_nan_at_step >= 0 reads it "
                                                        "(it is {c.train.inject_nan_at_step})"),),
                                        resumable=True),
    "train.peak_flops_per_device": Field(0.0, "peak FLOP/s of one device for MFU (0: known bf16 peaks)",
                                         float,
                                         (NON_NEGATIVE,), resumable=True),
    "train.preemption_check_every_steps": Field(10, "processes without JAX's preemption service agree on a "
                                                "SIGTERM every this many steps", int, resumable=True),
    "train.profile_steps": Field(0, "steps traced with jax.profiler after the first (0 = none)", int,
                                 resumable=True),
    # eval
    "eval.every_steps": Field(0, "evaluate during training every this many steps (0 = never)", int,
                              resumable=True),
    "eval.tasks": Field(("itm", "mlm", "vqa", "pairs", "itc"), "tasks evaluated where the model has the head",
                        tuple, resumable=True),
    "eval.batch_size": Field(64, "evaluation examples per batch", int, resumable=True),
    "eval.retrieval_rerank_k": Field(16, "retrieval: ITM re-ranks each query's top k by ITC (0: ITC only)",
                                     int, read_when=(When(_evaluates_retrieval,
                                                          "no evaluator has the 'retrieval' task"),),
                                     resumable=True),
    "evals": Field({}, "named evaluators, each over its own data: {name: {data, tasks, batch_size}}; empty: "
                   "one over config.data.eval_split", dict, resumable=True),
    # init
    "init.checkpoint": Field("", "a vlfusion workdir or checkpoints/<step> the parameters start from", str),
    "init.huggingface": Field("", "a local HF directory the parameters start from", str),
    "init.exclude": Field("", "regex of parameters left fresh on purpose", str, (regex,)),
    "init.allow_fresh": Field("", "regex of parameters that may stay fresh or unused besides the new head",
                              str, (regex,)),
}


def open_sections(fields: dict[str, Field] | None = None) -> tuple[str, ...]:
  """Fields whose value is a dict of entries the user names (config.evals, config.data.mixture)."""
  return tuple(name for name, f in (FIELDS if fields is None else fields).items() if f.type is dict)


def resumable_changes(fields: dict[str, Field] | None = None) -> tuple[str, ...]:
  """The fields a resumed run may change, as training.workdir matches them: a name, or "<name>." for an
  open section (any entry under it)."""
  fields = FIELDS if fields is None else fields
  return tuple(name + "." if f.type is dict else name for name, f in fields.items() if f.resumable)


def non_structural(fields: dict[str, Field] | None = None) -> tuple[str, ...]:
  """The model fields (without `model.`) a run started from another's parameters may set differently."""
  fields = FIELDS if fields is None else fields
  return tuple(name[len("model."):] for name, f in fields.items()
               if name.startswith("model.") and not f.structural)


def structural(fields: dict[str, Field] | None = None) -> tuple[str, ...]:
  """The model fields (without `model.`) whose difference makes another model."""
  fields = FIELDS if fields is None else fields
  return tuple(name[len("model."):] for name, f in fields.items()
               if name.startswith("model.") and f.structural)


def base_config(fields: dict[str, Field] | None = None) -> ml_collections.ConfigDict:
  """A ConfigDict of every declared field at its default, unlocked (configuration.base_config)."""
  config = ml_collections.ConfigDict()
  for name, field in (FIELDS if fields is None else fields).items():
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    if field.default is None:
      node[leaf] = ml_collections.FieldReference(None, field_type=field.type)
    elif field.type is dict:
      node[leaf] = ml_collections.ConfigDict(dict(field.default))
    else:
      node[leaf] = field.default
  return config
