"""Pixels for `patches` input: decode, resize (square, or aspect-preserving with padding), RandAugment.

`config.data.image_resize`:
- "square": the image is stretched to image_size x image_size (no mask), as before this option existed.
- "pad": ViLT's way: the longer side is resized to image_size, the aspect ratio kept, the image placed in
  the top-left corner of an image_size x image_size canvas of zeros, and `image_mask` [H, W] (1 = real
  pixel) says which pixels are the image; the model masks the patches that are all padding.

`randaugment` (training only; Cubuk et al., 2020) applies `num_ops` operations drawn uniformly, each at
`magnitude` (0-10), from RandAugment's list without colour inversion and cutout, as ViLT does: captions
and questions talk about colours, and cutout may erase the small object a question is about.

Every image mode becomes RGB as it looks (`to_rgb`): 16-bit grayscale scaled from 0..65535 (PIL's own
conversion clips it, which turns most of an image white), transparency composited over white (as a
browser shows a transparent PNG on a page), CMYK, palettes and the rest by PIL's conversion.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

RESIZE_MODES = ("square", "pad")
# Modes of one integer channel read as 16-bit (I;16 PNGs and TIFFs; older Pillow opens them as I).
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_BACKGROUND = (255, 255, 255, 255)
MAX_MAGNITUDE = 10
_FILL = (128, 128, 128)


def open_image(data: bytes | np.ndarray, size: int) -> Image.Image:
  """An RGB PIL image from encoded bytes (JPEGs decoded at reduced scale when much larger than `size`,
  which is most of the decoding cost) or from uint8 pixels [H, W, 3]."""
  if isinstance(data, np.ndarray):
    return Image.fromarray(np.asarray(data, np.uint8))
  image = Image.open(io.BytesIO(data))
  image.draft("RGB", (size, size))
  return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
  """`image` in RGB as it is meant to look: 16-bit grayscale (I;16, I) scaled by 255/65535, an alpha
  channel or a transparent palette or colour key composited over white, any other mode (palette, CMYK,
  L, 1) through PIL's conversion."""
  if image.mode == "RGB" and "transparency" not in image.info:
    return image
  if image.mode in _WIDE_GREY:
    grey = np.asarray(image).astype(np.float64) / 257.0
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
  if image.mode in _ALPHA_MODES or "transparency" in image.info:
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _BACKGROUND), rgba).convert("RGB")
  return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: the image stretched to a square."""
  if image.size != (size, size):
    image = image.resize((size, size), Image.BILINEAR)
  return np.asarray(image, np.uint8)


def resize_pad(image: Image.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [size, size, 3], bool mask [size, size]): the longer side resized to `size`, aspect kept,
  the image in the top-left corner and zeros elsewhere; the mask is True on the image."""
  w, h = image.size
  scale = size / max(w, h)
  new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BILINEAR)
  pixels = np.zeros((size, size, 3), np.uint8)
  pixels[:new_h, :new_w] = np.asarray(image, np.uint8)
  mask = np.zeros((size, size), bool)
  mask[:new_h, :new_w] = True
  return pixels, mask


def model_pixels(image: Image.Image, size: int, mode: str) -> dict[str, np.ndarray]:
  """What the model reads of an RGB image for `config.data.image_resize=mode`: `image` float32
  [size, size, 3] in [0, 1], and with "pad" `image_mask` bool [size, size] (see the module docstring).
  Evaluation rows and `vlfusion.load`'s predictor both make their pixels here."""
  if mode not in RESIZE_MODES:
    raise ValueError(f"config.data.image_resize={mode!r}; choose from {RESIZE_MODES}")
  if mode == "pad":
    pixels, mask = resize_pad(image, size)
    return {"image": pixels.astype(np.float32) / 255.0, "image_mask": mask}
  return {"image": resize_square(image, size).astype(np.float32) / 255.0}


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=_FILL)


def _ops() -> dict:
  """Each operation as f(image, m in [0, 1], sign in {-1, 1})."""
  enhance = lambda cls: lambda im, m, s: cls(im).enhance(1.0 + s * 0.9 * m)
  return {
      "identity": lambda im, m, s: im,
      "autocontrast": lambda im, m, s: ImageOps.autocontrast(im),
      "equalize": lambda im, m, s: ImageOps.equalize(im),
      "rotate": lambda im, m, s: im.rotate(s * 30.0 * m, resample=Image.BILINEAR, fillcolor=_FILL),
      "solarize": lambda im, m, s: ImageOps.solarize(im, int(256 - 256 * m)),
      "color": enhance(ImageEnhance.Color),
      "posterize": lambda im, m, s: ImageOps.posterize(im, 8 - int(4 * m)),
      "contrast": enhance(ImageEnhance.Contrast),
      "brightness": enhance(ImageEnhance.Brightness),
      "sharpness": enhance(ImageEnhance.Sharpness),
      "shear_x": lambda im, m, s: _affine(im, (1, s * 0.3 * m, 0, 0, 1, 0)),
      "shear_y": lambda im, m, s: _affine(im, (1, 0, 0, s * 0.3 * m, 1, 0)),
      "translate_x": lambda im, m, s: _affine(im, (1, 0, s * 0.45 * m * im.size[0], 0, 1, 0)),
      "translate_y": lambda im, m, s: _affine(im, (1, 0, 0, 0, 1, s * 0.45 * m * im.size[1])),
  }


OPS = _ops()
_NAMES = tuple(OPS)


def randaugment(image: Image.Image, rng: np.random.Generator, num_ops: int, magnitude: float) -> Image.Image:
  """`num_ops` operations drawn uniformly (with replacement), each at `magnitude` / 10 with a random sign."""
  m = magnitude / MAX_MAGNITUDE
  for _ in range(num_ops):
    name = _NAMES[int(rng.integers(len(_NAMES)))]
    sign = 1.0 if rng.random() < 0.5 else -1.0
    image = OPS[name](image, m, sign)
  return image
