"""vlfusion.evaluation."""
