"""Fusion encoders, embeddings, heads and `build_model`."""

from vlfusion.models.model import VisionLanguageModel, build_model

__all__ = ["VisionLanguageModel", "build_model"]
