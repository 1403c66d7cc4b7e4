"""Inference in one line: `vlfusion.load(path)` and the predictor it returns.

```python
import vlfusion
model = vlfusion.load("workdir/vqa")                # a vlfusion workdir, or an HF LXMERT/VisualBERT/ViLT dir
model.vqa(["scene.png"], ["what colour is the circle?"], top_k=3)   # [[("red", 0.97), ...]]
model.match(["scene.png"], ["a red circle"])        # [0.93]  P(the text describes the image), ITM head
```

A workdir gives its saved config (`config.json`), the parameters of its latest complete checkpoint (or
`step`; the optimizer state is not read), the run's tokenizer (`config.data.vocab_path`) and its
evaluation-time image preprocessing (`images.model_pixels` at `model.image.image_size` with
`data.image_resize`, no augmentation). An HF directory is converted by `convert.from_huggingface`; its
`vocab.txt` is the tokenizer and its `preprocessor_config.json` (when present) adds HF's mean/std
normalisation after the same resize.

Images are file paths, PIL images, uint8 arrays [H,W,3] or float arrays [H,W,3] in [0, 1]; a model over
`regions` takes instead a dict {"features" [R,F], "boxes" [R,4], optional "mask" [R]} per image. Rows are
padded up to a bucket size (`BUCKETS`; padding rows have `example_mask` False) and the text to the run's
`data.max_text_len`, so each function compiles once per bucket. Everything runs on one device (the
first), without the run's mesh.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlfusion.errors import ConfigError

BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # padded batch sizes; larger inputs run in chunks of the largest.
HF_MAX_TEXT_LEN = 40  # word pieces per text for an HF model (its position table may allow more).


def _bucket(n: int) -> int:
  return next(b for b in BUCKETS if b >= n)


def pair_rows(name_a: str, a: Sequence[Any], name_b: str, b: Sequence[Any]
               ) -> tuple[list[Any], list[Any]]:
  """Two row lists of one length; a list of one is repeated to the other's length."""
  a, b = list(a), list(b)
  if len(a) == 1 and len(b) > 1:
    a = a * len(b)
  elif len(b) == 1 and len(a) > 1:
    b = b * len(a)
  if len(a) != len(b):
    raise ValueError(f"{len(a)} {name_a} but {len(b)} {name_b}: give one of each per row, or one to pair "
                     "with all")
  if not a:
    raise ValueError(f"no {name_a} given")
  return a, b


@dataclasses.dataclass(frozen=True)
class Attention:
  """Where each text token looks in the image, by fusion layer (`analysis.attention_maps`).

  Attributes:
    tokens: the text's word pieces, [CLS] and [SEP] included (T of them).
    maps: {attention module: (weights [T,Li] over the image tokens, averaged over heads; the share of
      each token's attention on the image [T], 1 for cross-attention)}. Patch models' image tokens are
      the image [CLS] then the patches in raster order; region models' are the regions given.
  """

  tokens: list[str]
  maps: dict[str, tuple[np.ndarray, np.ndarray]]


class Inference:
  """A model with its tokenizer, preprocessing and answer vocabulary (see the module docstring).

  Attributes:
    config: the run config (for an HF directory: the defaults with the converted `model`).
    source: the workdir or HF directory it was loaded from.
    step: the checkpoint step (None for an HF directory).
    answers: the VQA answer vocabulary, or None without a `vqa` head.
  """

  def __init__(self, config: Any, params: Any, tokenizer: Any, source: str, step: int | None = None,
               answers: list[str] | None = None, normalize: tuple[np.ndarray, np.ndarray] | None = None,
               max_text_len: int | None = None):
    import jax

    from vlfusion.models import build_model

    self.config = config
    self.source = source
    self.step = step
    self.answers = answers
    self._tokenizer = tokenizer
    self._normalize = normalize
    self._max_text_len = int(max_text_len or config.data.max_text_len)
    self._model = build_model(config.model)
    self._device = jax.devices()[0]
    self._params = jax.device_put(params, self._device)
    self._forward = jax.jit(lambda p, b: self._model.apply({"params": p}, b, train=False))
    self._encode = jax.jit(lambda p, b: self._model.apply({"params": p}, b, True,
                                                          method=self._model.encode)[0])
    self._capture = None

  @property
  def tokenizer(self) -> Any:
    if self._tokenizer is None:
      raise ConfigError(f"{self.source}: no tokenizer (an HF directory needs its vocab.txt)")
    return self._tokenizer

  @property
  def heads(self) -> tuple[str, ...]:
    return tuple(self.config.model.heads)

  # -- inputs ----------------------------------------------------------------------------------------

  def preprocess_image(self, image: Any) -> dict[str, np.ndarray]:
    """One image as the model reads it: {"image" [H,W,3] (+ "image_mask")} or {"regions": {...}}."""
    m = self.config.model
    if m.image.input == "regions":
      return {"regions": self._regions(image)}
    if isinstance(image, dict):
      raise ValueError(f"a dict of regions was given, but config.model.image.input={m.image.input!r} "
                       "reads pixels: give a path, PIL image or array")
    from PIL import Image

    from vlfusion.data import images

    if isinstance(image, (str, os.PathLike)):
      if not os.path.isfile(image):
        raise FileNotFoundError(f"image file not found: {os.fspath(image)}")
      with open(image, "rb") as f:
        pil = images.open_image(f.read(), m.image.image_size)
    elif isinstance(image, Image.Image):
      pil = images.to_rgb(image)
    else:
      array = np.asarray(image)
      if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image array must be [H, W, 3]; got shape {array.shape}")
      if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0 or array.max() > 1:
          raise ValueError("a float image array must hold values in [0, 1]")
        array = np.round(array * 255.0)
      pil = Image.fromarray(array.astype(np.uint8))
    out = images.model_pixels(pil, m.image.image_size, self.config.data.image_resize)
    if self._normalize is not None:
      mean, std = self._normalize
      out["image"] = ((out["image"] - mean) / std).astype(np.float32)
    return out

  def _regions(self, image: Any) -> dict[str, np.ndarray]:
    m = self.config.model.image
    if not isinstance(image, dict) or "features" not in image or "boxes" not in image:
      raise ValueError("config.model.image.input='regions': this model reads region features, not "
                       "pixels; give each image as {'features': [R, F], 'boxes': [R, 4]} (optional 'mask')")
    features = np.asarray(image["features"], np.float32)
    boxes = np.asarray(image["boxes"], np.float32)
    if features.ndim != 2 or features.shape[1] != m.feature_dim:
      raise ValueError(f"region features must be [R, {m.feature_dim}] (config.model.image.feature_dim); "
                       f"got {features.shape}")
    if boxes.shape != (features.shape[0], m.box_dim):
      raise ValueError(f"region boxes must be [R, {m.box_dim}] for {features.shape[0]} regions; got "
                       f"{boxes.shape}")
    given = np.asarray(image.get("mask", np.ones(len(features), bool)), bool)
    r = max(m.num_regions, 1)
    n = min(len(features), r)
    out = {"features": np.zeros((r, m.feature_dim), np.float32),
           "boxes": np.zeros((r, m.box_dim), np.float32), "mask": np.zeros((r,), bool)}
    out["features"][:n], out["boxes"][:n], out["mask"][:n] = features[:n], boxes[:n], given[:n]
    return out

  def encode_text(self, text: str) -> dict[str, np.ndarray]:
    """{"text_ids", "text_mask"} [Lt] of one text, padded to the run's `data.max_text_len`."""
    lt = self._max_text_len
    ids = self.tokenizer.encode(str(text), max_len=lt)
    text_ids = np.full((lt,), self.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    return {"text_ids": text_ids, "text_mask": np.arange(lt) < len(ids)}

  def _blank_image(self) -> dict[str, np.ndarray]:
    m = self.config.model.image
    if m.input == "regions":
      r = max(m.num_regions, 1)
      return {"regions": {"features": np.zeros((r, m.feature_dim), np.float32),
                          "boxes": np.zeros((r, m.box_dim), np.float32), "mask": np.arange(r) < 1}}
    out = {"image": np.zeros((m.image_size, m.image_size, 3), np.float32)}
    if self.config.data.image_resize == "pad":
      out["image_mask"] = np.ones((m.image_size, m.image_size), bool)
    return out

  def _rows(self, images: Sequence[Any] | None, texts: Sequence[str] | None) -> list[dict[str, Any]]:
    n = len(images if images is not None else texts)
    pixels = [self.preprocess_image(i) for i in images] if images is not None else [self._blank_image()] * n
    text = [self.encode_text(t) for t in texts] if texts is not None else [self.encode_text("")] * n
    return [{**p, **t, "example_mask": np.bool_(True)} for p, t in zip(pixels, text, strict=True)]

  def _run(self, fn: Callable[[Any, dict[str, Any]], Any], rows: list[dict[str, Any]]) -> list[Any]:
    """`fn(params, batch)` over the rows in chunks padded to a bucket; the host outputs of each chunk."""
    import jax

    from vlfusion.data import pipeline

    out = []
    for start in range(0, len(rows), BUCKETS[-1]):
      chunk = rows[start:start + BUCKETS[-1]]
      pad = dict(chunk[0], example_mask=np.bool_(False))
      batch = pipeline.collate(chunk + [pad] * (_bucket(len(chunk)) - len(chunk)))
      out.append((len(chunk), batch, jax.device_get(fn(self._params, batch))))
    return out

  def _outputs(self, rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(o[key])[:n] for n, _, o in self._run(self._forward, rows)])

  def _need(self, head: str, what: str) -> None:
    if head not in self.heads:
      raise ConfigError(f"{what} needs the {head!r} head, but config.model.heads={self.heads} "
                        f"({self.source})")

  # -- tasks -----------------------------------------------------------------------------------------

  def vqa(self, images: Sequence[Any], questions: Sequence[str], top_k: int = 5
          ) -> list[list[tuple[str, float]]]:
    """Per row, the `top_k` answers of the run's answer vocabulary with their scores (the sigmoid of
    the VQA logit, as the head is trained: binary cross-entropy on soft scores), best first."""
    self._need("vqa", "vqa()")
    if not self.answers:
      raise ConfigError(f"{self.source}: no answer vocabulary for the vqa head")
    images, questions = pair_rows("images", images, "questions", questions)
    logits = self._outputs(self._rows(images, questions), "vqa_logits").astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits))
    k = max(1, min(int(top_k), scores.shape[1]))
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[(self.answers[int(a)], float(s[a])) for a in row] for row, s in zip(order, scores, strict=True)]

  def match(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
    """Per row, the probability that the text describes the image (the ITM head's softmax, label 1)."""
    self._need("itm", "match()")
    images, texts = pair_rows("images", images, "texts", texts)
    logits = self._outputs(self._rows(images, texts), "itm_logits").astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p[:, 1] / p.sum(-1)).tolist()

  def similarity(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
    """Per row, the cosine similarity of the image's and the text's ITC embeddings."""
    self._need("itc", "similarity()")
    images, texts = pair_rows("images", images, "texts", texts)
    rows = self._rows(images, texts)
    t, v = self._outputs(rows, "itc_text_embeds"), self._outputs(rows, "itc_image_embeds")
    return np.sum(_unit(t) * _unit(v), axis=-1).tolist()

  def embed_images(self, images: Sequence[Any]) -> np.ndarray:
    """[N, E]: the ITC image embeddings (unit vectors) where the model has the `itc` head; else [N, Di],
    the summary of the image states that have not seen the text ([CLS] of patches, mean of regions),
    which lives in another space than `embed_texts`'."""
    return self._embed(self._rows(list(images), None), "image")

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """[N, E]: the ITC text embeddings (unit vectors) with the `itc` head; else [N, Dt], the text [CLS]
    state before fusion."""
    return self._embed(self._rows(None, list(texts)), "text")

  def _embed(self, rows: list[dict[str, Any]], side: str) -> np.ndarray:
    if not rows:
      raise ValueError(f"no {side}s given")
    if "itc" in self.heads:
      return self._outputs(rows, f"itc_{side}_embeds")
    from vlfusion.models.heads import image_summary

    out = []
    for n, batch, enc in self._run(self._encode, rows):
      if side == "text":
        out.append(np.asarray(enc.text_unimodal)[:n, 0])
      else:
        mask = (np.asarray(batch["regions"]["mask"]) if self.config.model.image.input == "regions"
                else np.ones(np.asarray(enc.image_unimodal).shape[:2], bool))
        out.append(np.asarray(image_summary(enc.image_unimodal, mask, self.config.model.image.input))[:n])
    return np.concatenate(out)

  def attention(self, image: Any, text: str) -> Attention:
    """The cross-modal attention of `text` over `image` in each fusion layer
    (`analysis.attention_maps.cross_modal_maps`), at the text's valid tokens."""
    import jax

    from vlfusion.analysis import attention_maps

    if self.config.model.fusion == "dual_encoder":
      raise ConfigError(f"config.model.fusion='dual_encoder' has no cross-modal attention ({self.source})")
    if self._capture is None:
      self._capture = jax.jit(attention_maps.capture_fn(self._model))
    [(_, batch, (outputs, intermediates))] = self._run(self._capture, self._rows([image], [text]))
    maps, image_mask = attention_maps.batch_maps(intermediates, batch, outputs, self.config.model.image.input)
    valid = np.asarray(batch["text_mask"][0], bool)
    ids = np.asarray(batch["text_ids"][0])[valid]
    tokens = [self.tokenizer.decode([int(i)]) or "?" for i in ids]
    keep = image_mask[0]
    return Attention(tokens, {name: (w[0][valid][:, keep], s[0][valid]) for name, (w, s) in maps.items()})


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# -- predict.py ----------------------------------------------------------------------------------------

TASKS = ("vqa", "match", "similarity")


def read_image(path: str) -> Any:
  """An image argument of predict.py: an `.npz` file of region arrays (`features`, `boxes`, optional
  `mask`) as a dict, any other path as itself (an image file)."""
  if str(path).endswith(".npz"):
    with np.load(path) as held:
      return {k: held[k] for k in held.files}
  return path


def predict_record(model: Inference, task: str, image_paths: Sequence[str], texts: Sequence[str],
                   top_k: int = 5) -> dict[str, Any]:
  """What predict.py prints: {"source", "step", "task", "results": [{"image", "text", and "answers"
  ([answer, score], best first) | "match" | "similarity"}]}, one result per (image, text) row."""
  if task not in TASKS:
    raise ValueError(f"task={task!r}; choose from {TASKS}")
  paths, texts = pair_rows("images", image_paths, "texts", texts)
  images = [read_image(p) for p in paths]
  if task == "vqa":
    values = [{"answers": [[a, s] for a, s in row]} for row in model.vqa(images, texts, top_k)]
  else:
    values = [{task: v} for v in getattr(model, task)(images, texts)]
  results = [{"image": str(p), "text": t, **v} for p, t, v in zip(paths, texts, values, strict=True)]
  return {"source": model.source, "step": model.step, "task": task, "results": results}


# -- loading -------------------------------------------------------------------------------------------

def is_huggingface_dir(path: Any) -> bool:
  """Whether `path` holds an HF checkpoint (a config.json with `model_type`) rather than a workdir."""
  config = os.path.join(os.fspath(path), "config.json")
  if "://" in os.fspath(path) or not os.path.isfile(config):
    return False
  with open(config) as f:
    try:
      return "model_type" in json.load(f)
    except ValueError:
      return False


def answer_vocab(config: Any) -> list[str]:
  """The answer vocabulary a run's `vqa_scores` columns index (`datasets.answer_vocab`).

  The shapes world's is in the code; VQA v2's is read from the prepared dataset's metadata in
  `config.data.data_dir` (it is not stored in the workdir), so that dataset must be there.
  """
  from vlfusion.data import datasets, questions

  family = config.data.name.split("/")[0]
  try:
    _, builder = datasets.open_dataset(config, config.data.train_split, 0, 1, prepare=False)
  except Exception as e:  # noqa: BLE001 - an unprepared or absent dataset: only the generated ones know.
    if family in datasets.GENERATED_DATASETS:
      return list(questions.ANSWERS)
    raise ConfigError(f"the answer vocabulary of config.data.name={config.data.name!r} is read from the "
                      f"prepared dataset in config.data.data_dir={config.data.data_dir!r}, which cannot be "
                      f"opened ({e}); prepare it there, or pass vlfusion.load(..., answers=[...])") from e
  return datasets.answer_vocab(config, builder)


def load_workdir(path: Any, step: int | None = None, answers: list[str] | None = None) -> Inference:
  """The predictor of a vlfusion workdir at checkpoint `step` (the latest complete one by default)."""
  from flax import traverse_util

  from vlfusion.data import datasets
  from vlfusion.rundir import Workdir
  from vlfusion.training import initialization

  run = Workdir(path)
  config = run.read_config()
  if config is None:
    raise ConfigError(f"{os.fspath(path)!r} holds neither a vlfusion run ({run.config_path} is missing) "
                      "nor an HF checkpoint")
  step_dir = run.checkpoint(step, field="vlfusion.load")
  flat = initialization.unroll(run.restore_params(int(step_dir.name), field="vlfusion.load"))
  config.model.scan_layers = False  # the parameters are unrolled; the same model layer by layer.
  if "vqa" in config.model.heads:
    answers = list(answers) if answers is not None else answer_vocab(config)
    if len(answers) != config.model.vqa.num_answers:
      raise ConfigError(f"config.model.vqa.num_answers={config.model.vqa.num_answers} but the answer "
                        f"vocabulary of {config.data.name} has {len(answers)} answers")
  return Inference(config, traverse_util.unflatten_dict(flat), datasets.make_tokenizer(config),
                   os.fspath(run.path), int(step_dir.name), answers)


def load_huggingface(path: Any) -> Inference:
  """The predictor of an HF LXMERT / VisualBERT / ViLT (or BERT) directory (`convert.from_huggingface`)."""
  from vlfusion import configuration
  from vlfusion.convert import from_huggingface
  from vlfusion.data.tokenizer import WordPieceTokenizer

  path = os.fspath(path)
  model_config, params = from_huggingface(path)
  config = configuration.base_config()
  config.model = model_config
  config.data.image_resize = "square"
  vocab = os.path.join(path, "vocab.txt")
  settings = _read_json(os.path.join(path, "tokenizer_config.json"))
  tokenizer = (WordPieceTokenizer(vocab, lowercase=bool(settings.get("do_lower_case", True)))
               if os.path.isfile(vocab) else None)
  pre = _read_json(os.path.join(path, "preprocessor_config.json"))
  normalize = None
  if pre.get("do_normalize"):
    normalize = (np.asarray(pre.get("image_mean", 0.5), np.float32),
                 np.asarray(pre.get("image_std", 0.5), np.float32))
  return Inference(config, params, tokenizer, path, normalize=normalize,
                   max_text_len=min(HF_MAX_TEXT_LEN, int(model_config.text.max_len)))


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def load(path: Any, step: int | None = None, answers: list[str] | None = None) -> Inference:
  """A predictor over a vlfusion workdir (checkpoint `step`, the latest complete one by default) or an
  HF LXMERT / VisualBERT / ViLT directory (see the module docstring). `answers` overrides the run's
  answer vocabulary (VQA v2's is read from its prepared dataset)."""
  if is_huggingface_dir(path):
    if step is not None:
      raise ValueError(f"step={step}: {os.fspath(path)} is an HF directory, which has no steps")
    return load_huggingface(path)
  return load_workdir(path, step, answers)
