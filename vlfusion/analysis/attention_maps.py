r"""Where each text token looks in the image: cross-modal attention maps of a trained workdir, as PNGs.

  python -m vlfusion.analysis.attention_maps --workdir=W --example=N [--step=S] [--out=DIR]

Reads `W/config.json` and the parameters of the latest checkpoint (or `--step`), runs example N of the
eval split, and writes one PNG per fusion layer to `W/attention_maps/example_<N>/` (or `--out`): a panel
per text token showing its attention over the image, averaged over heads: regions as boxes filled and
outlined by their weight, patches as a heat map (the image's [CLS] token is left out); low weight
dims the image rather than tinting it, so the colours a question asks about stay true. Each panel's
colour scale runs from 0 to that token's largest weight, and the panel is labelled with the largest
weight and, for joint (single-stream) layers, the share of the token's attention that goes to the image
at all.

Cross-modal attention is found by shape, for every family that has it: an attention whose queries are
the text and keys the image (co-attention's text stream, one-way fusion's cross-attention), or a joint
self-attention over [text; image] (single-stream and merged attention), whose text rows are split at the
image columns. The dual encoder has none. The probabilities are recomputed from the captured query and
key projections (`capture_intermediates`), so the model code is unchanged.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from absl import app, flags

from vlfusion.rundir import Workdir, as_path

PANEL = 128  # pixels per panel side.
LABEL = 26  # pixels of text under a panel.


def probabilities(query: np.ndarray, key: np.ndarray, key_mask: np.ndarray, mean_heads: bool = True
                  ) -> np.ndarray:
  """softmax(QK^T / sqrt(Dh)) over unmasked keys: [B,Lq,Lk] averaged over heads, else [B,H,Lq,Lk].

  query [B,Lq,H,Dh], key [B,Lk,H,Dh], key_mask bool [B,Lk]; as `jax.nn.dot_product_attention` computes.
  """
  q, k = np.asarray(query, np.float64), np.asarray(key, np.float64)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(-1, keepdims=True)
  return p.mean(axis=1) if mean_heads else p


def _calls(tree: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[np.ndarray, ...]]:
  """{module path: outputs of each `__call__`} from captured intermediates."""
  out = {}
  for name, value in tree.items():
    if name == "__call__":
      out[path] = tuple(value)
    elif isinstance(value, dict) or hasattr(value, "items"):
      out.update(_calls(value, (*path, name)))
  return out


QueryKey = dict[tuple[str, ...], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]


def cross_modal_maps(query_key: QueryKey, text_mask: np.ndarray, image_mask: np.ndarray
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{attention module name: (text-over-image weights [B,Lt,Li], share of attention on the image [B,Lt])}.

  `query_key` maps an attention module's path to the (query outputs, key outputs) of each of its calls;
  text_mask [B,Lt] and image_mask [B,Li] mark the real keys.
  """
  text_len, image_len = text_mask.shape[1], image_mask.shape[1]
  maps = {}
  for path, (queries, keys) in sorted(query_key.items()):
    for q, k in zip(queries, keys, strict=True):
      lq, lk = q.shape[1], k.shape[1]
      if lq == text_len and lk == image_len:  # text queries over image keys.
        p = probabilities(q, k, image_mask)
        maps["/".join(path)] = (p, np.ones(p.shape[:2]))
      elif lq == lk == text_len + image_len:  # a joint stack: text rows, image columns.
        mask = np.concatenate([text_mask, image_mask], axis=1)
        p = probabilities(q, k, mask)[:, :text_len]
        maps["/".join(path)] = (p[:, :, text_len:], p[:, :, text_len:].sum(-1))
  return maps


def capture_fn(model: Any):
  """(params, batch) -> (the model's outputs, the captured intermediates of every attention's query
  and key projections), at evaluation time; jit it."""
  is_qk = lambda module, method: method == "__call__" and module.name in ("query", "key")

  def capture(params: Any, batch: dict[str, Any]):
    outputs, state = model.apply({"params": params}, batch, train=False, capture_intermediates=is_qk,
                                 mutable=["intermediates"])
    return outputs, state["intermediates"]

  return capture


def batch_maps(intermediates: Any, batch: dict[str, Any], outputs: dict[str, Any], image_input: str
               ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
  """(`cross_modal_maps` of a batch from what `capture_fn` captured, the image mask [B,Li] they use):
  region rows keep their mask; every patch token is a key (the image [CLS] included)."""
  import jax

  calls = _calls(jax.device_get(intermediates))
  query_key = {path[:-1]: (calls[path], calls[(*path[:-1], "key")])
               for path in calls if path[-1] == "query" and (*path[:-1], "key") in calls}
  text_mask = np.asarray(batch["text_mask"], bool)
  if image_input == "regions":
    image_mask = np.asarray(batch["regions"]["mask"], bool)
  else:
    image_mask = np.ones(np.asarray(outputs["image_hidden"]).shape[:2], bool)
  return cross_modal_maps(query_key, text_mask, image_mask), image_mask


def _layer_key(name: str) -> tuple:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _font():
  from PIL import ImageFont

  return ImageFont.load_default()


def _token_panel(pixels: np.ndarray, weights: np.ndarray, boxes: np.ndarray | None, label: str):
  """One token's panel: the image with its attention drawn over it."""
  from PIL import Image, ImageDraw

  base = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).resize((PANEL, PANEL))
  top = max(float(weights.max()), 1e-12)
  # Low weight dims the image rather than tinting it, so the colours a question asks about stay true.
  if boxes is not None:  # regions: dim all, undim each box by its weight, outline it by its weight.
    shade = np.full((PANEL, PANEL), 170.0)
    for (x1, y1, x2, y2), w in zip(boxes.tolist(), weights.tolist(), strict=True):
      ys = slice(int(y1 * PANEL), int(np.ceil(y2 * PANEL)))
      xs = slice(int(x1 * PANEL), int(np.ceil(x2 * PANEL)))
      shade[ys, xs] = np.minimum(shade[ys, xs], 170.0 * (1 - w / top))
  else:  # patches: a shade per patch of the grid.
    g = int(round(len(weights) ** 0.5))
    shade = np.kron(170.0 * (1 - weights.reshape(g, g) / top), np.ones((-(-PANEL // g),) * 2))[:PANEL, :PANEL]
  overlay = Image.new("RGBA", (PANEL, PANEL), (0, 0, 0, 0))
  overlay.putalpha(Image.fromarray(shade.astype(np.uint8)))
  if boxes is not None:
    draw = ImageDraw.Draw(overlay)
    for (x1, y1, x2, y2), w in sorted(zip(boxes.tolist(), weights.tolist(), strict=True), key=lambda t: t[1]):
      a = w / top
      draw.rectangle([x1 * PANEL, y1 * PANEL, x2 * PANEL, y2 * PANEL],
                     outline=(0, 255, 255, int(40 + 215 * a)), width=1 + int(3 * a))
  panel = Image.new("RGB", (PANEL, PANEL + LABEL), (255, 255, 255))
  panel.paste(Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB"), (0, 0))
  ImageDraw.Draw(panel).multiline_text((3, PANEL + 1), label, fill=(0, 0, 0), font=_font(), spacing=1)
  return panel


def render_layer(pixels: np.ndarray, weights: np.ndarray, share: np.ndarray, tokens: list[str],
                 boxes: np.ndarray | None, title: str, columns: int = 6):
  """A grid of token panels under a title, as a PIL image. weights [Lt,Li] over valid tokens only."""
  from PIL import Image, ImageDraw

  rows = -(-len(tokens) // columns)
  head = 16 * (title.count("\n") + 1) + 4
  sheet = Image.new("RGB", (columns * (PANEL + 4) + 4, head + rows * (PANEL + LABEL + 4)), "white")
  ImageDraw.Draw(sheet).multiline_text((4, 2), title, fill=(0, 0, 0), font=_font())
  for i, token in enumerate(tokens):
    label = f"{i}: {token}\nmax {weights[i].max():.2f}" + (
        f"  on image {share[i]:.2f}" if share[i] < 0.999 else "")
    r, c = divmod(i, columns)
    where = (4 + c * (PANEL + 4), head + r * (PANEL + LABEL + 4))
    sheet.paste(_token_panel(pixels, weights[i], boxes, label), where)
  return sheet


def _load_run(workdir: str, step: int | None):
  from vlfusion.training import initialization

  run = Workdir(workdir)
  config = run.read_config()
  if config is None:
    raise FileNotFoundError(f"{run.config_path} does not exist: --workdir names no training run")
  step_dir = run.checkpoint(step, field="--workdir/--step")
  params = initialization.unroll(run.restore_params(int(step_dir.name), field="--workdir"))
  config.model.scan_layers = False  # captured per layer; the unrolled parameters fit.
  return config, step_dir, params


def attention_maps(workdir: str, example: int, step: int | None = None, out: str | None = None
                   ) -> list[str]:
  """Writes the PNGs of example `example` of the eval split; returns their paths."""
  import jax
  from flax import traverse_util

  from vlfusion.data import pipeline
  from vlfusion.models import build_model

  config, step_dir, flat = _load_run(workdir, step)
  if config.model.fusion == "dual_encoder":
    raise ValueError(f"{workdir}: the dual encoder has no cross-modal attention to draw")
  source = pipeline.make_batch_source(config, config.data.eval_split)
  if not 0 <= example < source.num_examples:
    raise ValueError(f"--example={example} is outside the {source.num_examples} examples of "
                     f"{config.data.name} split {config.data.eval_split!r}")
  ex = source.eval_example(example)
  batch = pipeline.collate([ex])
  record = source.data_source[example]
  if "image" in record:
    pixels = np.asarray(record["image"], np.float32) / 255.0
  elif "image" in ex:
    pixels = ex["image"]
  else:
    raise ValueError(f"{config.data.name} has no pixels to draw the attention on")

  model = build_model(config.model)
  params = traverse_util.unflatten_dict(flat)
  outputs, intermediates = jax.jit(capture_fn(model))(params, batch)
  maps, image_mask = batch_maps(intermediates, batch, outputs, config.model.image.input)
  text_mask = np.asarray(batch["text_mask"][0], bool)
  boxes = np.asarray(batch["regions"]["boxes"][0]) if config.model.image.input == "regions" else None
  if not maps:
    raise ValueError(f"{workdir}: no cross-modal attention found in model.fusion={config.model.fusion!r}")

  ids = np.asarray(batch["text_ids"][0])[text_mask]
  tokens = [source.tokenizer.decode([int(i)]) or "?" for i in ids]
  tokens = [t if t.strip() else source.tokenizer._id_to_token.get(int(i), "?")  # noqa: SLF001
            for t, i in zip(tokens, ids, strict=True)]
  title = f"{workdir}  step {step_dir.name}  example {example}: " + source.tokenizer.decode(ids)
  if "vqa_logits" in outputs and source.answer_vocab:
    answer = source.answer_vocab[int(np.argmax(outputs["vqa_logits"][0]))]
    truth = source.answer_vocab[int(np.argmax(batch["vqa_scores"][0]))]
    title += f"\npredicted {answer!r}, answer {truth!r}"
  out_dir = as_path(out) if out else Workdir(workdir).path / "attention_maps" / f"example_{example}"
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for name in sorted(maps, key=_layer_key):
    weights, share = maps[name]
    w, s = weights[0][text_mask], share[0][text_mask]
    region_boxes = None
    if boxes is not None:
      valid = image_mask[0]
      w, region_boxes = w[:, valid], boxes[valid]
    elif w.shape[1] == int(round((w.shape[1] - 1) ** 0.5)) ** 2 + 1:
      w = w[:, 1:]  # the image [CLS] token has no place on the grid.
    sheet = render_layer(pixels, w, s, tokens, region_boxes, f"{title}\n{name} (mean over heads)")
    path = out_dir / (name.replace("/", "__") + ".png")
    with path.open("wb") as f:
      sheet.save(f, format="PNG")
    written.append(os.fspath(path))
  return written


def main(argv):
  del argv
  from vlfusion import runtime

  runtime.initialize()
  f = flags.FLAGS
  for path in attention_maps(f.workdir, f.example, f.step, f.out):
    print(path)


def define_flags() -> None:
  """The command line's flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_string("workdir", None, "A trained workdir (config.json and checkpoints).")
  flags.DEFINE_integer("example", 0, "Index of the example in the eval split.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest complete one).")
  flags.DEFINE_string("out", None, "Output directory (default: <workdir>/attention_maps/example_<N>).")
  flags.mark_flag_as_required("workdir")


if __name__ == "__main__":
  define_flags()
  app.run(main)
