"""vlfusion.training."""
