"""vlfusion.data."""
