"""Merged-attention fusion (METER-merged): per-modality layers, then one stack over [text; image].

A composition, not a copy: the single-stream encoder with unimodal stages in front of the joint stack.
METER describes this variant in its paper only (no code was released); the joint stack here is the
single-stream one (modality-type embeddings, post-LN BERT layers over the concatenation).
"""

from __future__ import annotations

from typing import Any

from vlfusion.models.single_stream import SingleStreamEncoder
from vlfusion.models.stream import StreamSettings


def build(model_config: Any) -> SingleStreamEncoder:
  return SingleStreamEncoder(
      StreamSettings.from_config(model_config, "text", own_norm=False),
      num_layers=model_config.fusion_layers,
      text_encoder=StreamSettings.from_config(model_config, "text"),
      image_encoder=StreamSettings.from_config(model_config, "image"),
      num_text_layers=model_config.text.num_layers,
      num_image_layers=model_config.image.num_layers,
      name="encoder",
  )
