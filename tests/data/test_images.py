"""Aspect-preserving resize with `image_mask` (ViLT), and RandAugment on training batches only."""

import io
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs.pretrain import single_stream
from tests.conftest import tiny_config
from tests.data import fixtures as fx
from tests.data.test_pipeline import BERT_VOCAB
from vlfusion.data import images, pipeline
from vlfusion.models import build_model


def test_resize_pad_keeps_the_aspect_ratio():
  pixels = np.full((40, 80, 3), 200, np.uint8)  # 80 wide, 40 high
  out, mask = images.resize_pad(Image.fromarray(pixels), 32)
  assert out.shape == (32, 32, 3) and mask.shape == (32, 32)
  assert mask[:16].all() and not mask[16:].any()
  assert (out[:16] == 200).all() and (out[16:] == 0).all()


def test_randaugment_is_deterministic_in_its_generator():
  image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
  a = [np.asarray(images.randaugment(image, np.random.default_rng(k), 2, 9)) for k in (1, 1, 2)]
  np.testing.assert_array_equal(a[0], a[1])
  assert any(not np.array_equal(np.asarray(images.randaugment(image, np.random.default_rng(k), 2, 9)),
                                np.asarray(image)) for k in range(5))
  for name, op in images.OPS.items():  # every operation runs and keeps the size.
    assert op(image, 1.0, -1.0).size == image.size, name


@pytest.fixture(scope="module")
def wide_jsonl(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("wide"))
  fx.write_jsonl(root, num_train=8, size=(80, 40))
  return root


def _config(data_dir, manual_dir, **overrides):
  # Its own tfds folder: the session's holds image_text_jsonl prepared from other files.
  data_dir = os.path.join(data_dir, "wide_images")
  return tiny_config(single_stream, data_dir, **{
      "data.name": "image_text_jsonl/images", "data.manual_dir": manual_dir, "data.vocab_path": BERT_VOCAB,
      "data.global_batch_size": 4, "model.text.vocab_size": 30522, "model.image.input": "patches",
      "model.image.image_size": 32, "model.image.patch_size": 8, "data.image_resize": "pad", **overrides})


def test_padded_images_come_with_the_mask_the_model_reads(data_dir, wide_jsonl):
  config = _config(data_dir, wide_jsonl)
  source = pipeline.make_batch_source(config, "train")
  batch = source.get_batch(0)
  assert batch["image_mask"].shape == (4, 32, 32)
  assert batch["image_mask"][:, :16].all() and not batch["image_mask"][:, 16:].any()
  assert (batch["image"][:, 16:] == 0).all()
  # the model masks the padding patches: what the padding holds changes nothing.
  model = build_model(config.model)
  params = model.init(jax.random.key(0), batch, train=False)["params"]
  noisy = dict(batch, image=np.where(batch["image_mask"][..., None], batch["image"], 0.7))
  a = model.apply({"params": params}, batch, train=False)
  b = model.apply({"params": params}, noisy, train=False)
  np.testing.assert_allclose(a["itm_logits"], b["itm_logits"], atol=1e-5)
  unmasked = dict(noisy)
  del unmasked["image_mask"]
  c = model.apply({"params": params}, unmasked, train=False)
  assert np.abs(np.asarray(a["itm_logits"]) - np.asarray(c["itm_logits"])).max() > 1e-4


def test_randaugment_changes_training_batches_only(data_dir, wide_jsonl):
  plain = pipeline.make_batch_source(_config(data_dir, wide_jsonl), "train")
  augmented = pipeline.make_batch_source(_config(data_dir, wide_jsonl, **{
      "data.randaugment_num_ops": 2, "data.randaugment_magnitude": 9}), "train")
  a, b = plain.get_batch(1), augmented.get_batch(1)
  np.testing.assert_array_equal(a["text_ids"], b["text_ids"])  # same rows, same texts
  assert not np.array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(b["image"], augmented.get_batch(1)["image"])  # a function of the step
  ea, eb = next(plain.eval_batches(4)), next(augmented.eval_batches(4))
  np.testing.assert_array_equal(ea["image"], eb["image"])  # never at eval


def _decoded(image, fmt="PNG", **save):
  """The RGB pixels the pipeline's decoder makes of `image` saved as `fmt`."""
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save)
  return np.asarray(images.open_image(buffer.getvalue(), 64), np.float64)


def _on_white(rgb, alpha):
  """Reference compositing: each pixel over a white background by its alpha."""
  a = alpha[..., None] / 255.0
  return rgb * a + 255.0 * (1 - a)


_RNG = np.random.default_rng(0)
_GREY16 = _RNG.integers(0, 65536, (12, 10)).astype(np.uint16)
_RGB = _RNG.integers(0, 256, (12, 10, 3)).astype(np.uint8)
_ALPHA = _RNG.integers(0, 256, (12, 10)).astype(np.uint8)
_CMYK = _RNG.integers(0, 256, (12, 10, 4)).astype(np.uint8)
_PALETTE = _RNG.integers(0, 256, (256, 3)).astype(np.uint8)
_INDEX = _RNG.integers(0, 256, (12, 10)).astype(np.uint8)


def _palette_image(transparent: int | None = None):
  image = Image.fromarray(_INDEX, "P")
  image.putpalette(_PALETTE.ravel().tolist())
  if transparent is not None:
    image.info["transparency"] = transparent
  return image


def _palette_reference(transparent: int | None = None):
  rgb = _PALETTE[_INDEX].astype(np.float64)
  if transparent is None:
    return rgb
  return np.where((_INDEX == transparent)[..., None], 255.0, rgb)


@pytest.mark.parametrize("make,fmt,reference", [
    # 16-bit grayscale (PNG, mode I;16; TIFF as 32-bit I): 0..65535 scaled to 0..255, not clipped.
    (lambda: Image.fromarray(_GREY16), "PNG", lambda: np.repeat(_GREY16[..., None] / 257.0, 3, -1)),
    (lambda: Image.fromarray(_GREY16.astype(np.int32)), "TIFF",
     lambda: np.repeat(_GREY16[..., None] / 257.0, 3, -1)),
    (lambda: _palette_image(), "PNG", lambda: _palette_reference()),
    (lambda: _palette_image(transparent=int(_INDEX[0, 0])), "PNG",
     lambda: _palette_reference(int(_INDEX[0, 0]))),
    # CMYK: R = (255 - C)(255 - K) / 255, and so on.
    (lambda: Image.fromarray(_CMYK, "CMYK"), "TIFF",
     lambda: (255.0 - _CMYK[..., :3]) * (255.0 - _CMYK[..., 3:]) / 255.0),
    (lambda: Image.fromarray(np.dstack([_RGB, _ALPHA]), "RGBA"), "PNG", lambda: _on_white(_RGB, _ALPHA)),
    (lambda: Image.fromarray(np.dstack([_RGB[..., 0], _ALPHA]), "LA"), "PNG",
     lambda: _on_white(np.repeat(_RGB[..., :1], 3, -1), _ALPHA)),
], ids=["I;16", "I", "P", "P+transparency", "CMYK", "RGBA", "LA"])
def test_image_modes_decode_as_their_reference_rgb(make, fmt, reference):
  decoded = _decoded(make(), fmt)
  assert decoded.shape == (12, 10, 3)
  np.testing.assert_allclose(decoded, reference(), atol=1.01)
