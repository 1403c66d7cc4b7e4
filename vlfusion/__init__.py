"""vlfusion: vision-language fusion encoders in JAX/Flax."""
