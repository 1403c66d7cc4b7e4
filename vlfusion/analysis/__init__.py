"""vlfusion.analysis."""
