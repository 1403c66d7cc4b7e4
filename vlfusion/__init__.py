"""vlfusion: vision-language fusion encoders in JAX/Flax."""

# Before JAX starts its CPU backend: a thread pool large enough for collectives across several CPU
# devices in one process (an XLA:CPU deadlock otherwise; see vlfusion/cpu_threads.py).
from vlfusion import cpu_threads  # noqa: F401
