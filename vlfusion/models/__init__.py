"""vlfusion.models."""
