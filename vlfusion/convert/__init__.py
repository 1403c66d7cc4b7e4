"""vlfusion.convert."""
