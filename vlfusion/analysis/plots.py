"""Pillow line charts shared by the report and the curves tool: one panel of lines, dots, error bars
and end labels (no plotting library needed)."""

from __future__ import annotations

import math
from typing import Any

PANEL_W, PANEL_H, LEFT, BOTTOM, TOP, RIGHT = 460, 320, 56, 46, 28, 28


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
  """Round values (1, 2 or 5 x 10^k apart) inside [lo, hi], about `n` of them."""
  raw = (hi - lo) / max(n - 1, 1)
  if raw <= 0:
    return [lo]
  unit = 10 ** math.floor(math.log10(raw))
  step = next(m * unit for m in (1, 2, 5, 10) if m * unit >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def panel(title: str, xlabel: str, series: dict[str, dict[str, Any]], colours: dict[str, tuple]):
  """One plot: for each name, `line` [(x, y)] drawn as a line, `points` [(x, y)] as dots, `bars`
  [(x, lo, hi)] as vertical error bars, `label` placed at the last point."""
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
  draw = ImageDraw.Draw(image)
  xs = [p[0] for s in series.values() for key in ("line", "points") for p in s.get(key, [])]
  ys = [p[1] for s in series.values() for key in ("line", "points") for p in s.get(key, [])]
  ys += [v for s in series.values() for b in s.get("bars", []) for v in b[1:]]
  draw.text((LEFT, 8), title, fill="black", font=font)
  if not xs:
    draw.text((LEFT, PANEL_H // 2), "no data", fill="black", font=font)
    return image
  x0, x1 = min(xs), max(xs)
  pad = (x1 - x0) * 0.08 or (abs(x0) * 0.1 or 1.0)
  x0, x1 = x0 - pad, x1 + pad
  y0, y1 = min(ys), max(ys)
  ypad = (y1 - y0) * 0.08 or 0.05
  y0, y1 = y0 - ypad, y1 + ypad
  sx = lambda v: LEFT + (v - x0) / (x1 - x0) * (PANEL_W - LEFT - RIGHT)
  sy = lambda v: PANEL_H - BOTTOM - (v - y0) / (y1 - y0) * (PANEL_H - BOTTOM - TOP)
  draw.rectangle([LEFT, TOP, PANEL_W - RIGHT, PANEL_H - BOTTOM], outline=(150, 150, 150))
  for v in ticks(y0, y1):
    y = sy(v)
    draw.line([LEFT - 3, y, LEFT, y], fill="black")
    draw.line([LEFT + 1, y, PANEL_W - RIGHT - 1, y], fill=(235, 235, 235))
    draw.text((4, y - 5), f"{v:.3g}", fill="black", font=font)
  for value in ticks(x0, x1):
    x = sx(value)
    draw.line([x, PANEL_H - BOTTOM, x, PANEL_H - BOTTOM + 3], fill="black")
    label = f"{value:.3g}"
    draw.text((x - 3 * len(label), PANEL_H - BOTTOM + 6), label, fill="black", font=font)
  draw.text((PANEL_W // 2 - 3 * len(xlabel), PANEL_H - 16), xlabel, fill="black", font=font)
  for name, s in series.items():
    colour = colours[name]
    pale = tuple(int(c + (255 - c) * 0.55) for c in colour)
    for x, y in s.get("points", []):
      draw.ellipse([sx(x) - 2, sy(y) - 2, sx(x) + 2, sy(y) + 2], fill=pale)
    line = [(sx(x), sy(y)) for x, y in s.get("line", [])]
    if len(line) > 1:
      draw.line(line, fill=colour, width=2)
    for x, y in line:
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    for x, lo, hi in s.get("bars", []):
      draw.line([sx(x), sy(lo), sx(x), sy(hi)], fill=colour, width=1)
      for v in (lo, hi):
        draw.line([sx(x) - 4, sy(v), sx(x) + 4, sy(v)], fill=colour)
    if s.get("label") and line:
      x, y = line[-1]
      width = draw.textlength(s["label"], font=font)
      left = x + 5 + width > PANEL_W - RIGHT  # near the right edge: write it on the point's left.
      draw.text((x - 5 - width if left else x + 5, y - 5), s["label"], fill=colour, font=font)
  return image
