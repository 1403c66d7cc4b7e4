"""vlfusion: vision-language fusion encoders in JAX/Flax."""

# Before JAX starts its CPU backend: a thread pool large enough for collectives across several CPU
# devices in one process (an XLA:CPU deadlock otherwise; see vlfusion/cpu_threads.py).
from vlfusion import cpu_threads  # noqa: F401


def __getattr__(name):
  # `vlfusion.load` imports JAX, Flax and the models only when it is first used: `import vlfusion` stays
  # cheap for the entry points, which set JAX's flags first.
  if name == "load":
    from vlfusion.inference import load

    return load
  raise AttributeError(f"module 'vlfusion' has no attribute {name!r}")
