"""What a benchmark ran on: the CPU and its vector extensions, the cores, and the thread and XLA settings.

A figure without its machine cannot be compared: XLA's float32 matmul reaches 445 GFLOP/s on one 2-core
AMD EPYC and 281 on a 2-core Intel Xeon, and which of AVX2, AVX-512 or AMX a CPU has decides which code
paths its libraries take. Every benchmark prints `machine: ...` (`summary`) and writes `describe()` into
its JSON.

  python benchmarks/machine.py        # prints this machine's line
"""

from __future__ import annotations

import os
import platform
import sys

# /proc/cpuinfo flags worth naming, in the order they are printed.
EXTENSIONS = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX", "amx_bf16": "AMX BF16", "amx_int8": "AMX INT8",
}


def cpu_info(text: str | None = None) -> dict[str, str | list[str]]:
  """{"model", "vendor", "extensions"} from the text of /proc/cpuinfo (read when not given; on another
  system, `platform`'s names and no extensions)."""
  if text is None:
    try:
      with open("/proc/cpuinfo") as f:
        text = f.read()
    except OSError:
      return {"model": platform.processor() or platform.machine(), "vendor": "", "extensions": []}
  fields: dict[str, str] = {}
  for line in text.splitlines():
    key, sep, value = line.partition(":")
    if not sep:
      if fields:
        break  # the first processor's block is enough: the others repeat it.
      continue
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get("flags", "").split())
  return {"model": fields.get("model name", platform.machine()), "vendor": fields.get("vendor_id", ""),
          "extensions": [name for flag, name in EXTENSIONS.items() if flag in flags]}


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux.
    return os.cpu_count() or 1


def describe(environ: dict[str, str] | None = None, cpuinfo: str | None = None) -> dict:
  """The machine and the settings a figure depends on, as JSON-ready values."""
  environ = os.environ if environ is None else environ
  info = cpu_info(cpuinfo)
  out = {**info, "cores": usable_cores(), "python": platform.python_version(),
         "xla_flags": environ.get("XLA_FLAGS", ""),
         "xla_cpu_threads": environ.get("PJRT_NPROC") or environ.get("NPROC") or f"{usable_cores()} (cores)"}
  if "jax" in sys.modules:
    out["jax"] = sys.modules["jax"].__version__
  if "torch" in sys.modules:
    torch = sys.modules["torch"]
    out["torch"] = torch.__version__
    out["torch_threads"] = torch.get_num_threads()
  return out


def summary(d: dict) -> str:
  """One line: `AMD EPYC 7B13 (AuthenticAMD; AVX2, FMA, AVX-512), 2 cores, XLA CPU threads 2 (cores), ...`."""
  cpu = "; ".join(p for p in (d["vendor"], ", ".join(d["extensions"]) or "no AVX2 or AVX-512") if p)
  parts = [f"{d['model']} ({cpu})", f"{d['cores']} cores", f"XLA CPU threads {d['xla_cpu_threads']}",
           f"XLA_FLAGS={d['xla_flags'] or '(none)'}"]
  if "jax" in d:
    parts.append(f"jax {d['jax']}")
  if "torch" in d:
    parts.append(f"torch {d['torch']} ({d['torch_threads']} threads)")
  return ", ".join(parts)


if __name__ == "__main__":
  print(f"machine: {summary(describe())}")
