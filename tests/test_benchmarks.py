"""The README's benchmark commands run and print what they promise (tiny sizes; nothing is timed)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_peers_prints_one_line_per_model_and_the_ceilings(tmp_path):
  out = subprocess.run(
      [sys.executable, "benchmarks/peers.py", "--models=visualbert", "--size=tiny", "--rounds=1",
       "--steps=1", "--warmup=1", "--matmul_sizes=64", f"--json={tmp_path / 'peers.json'}"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
      env=dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(
          "--xla_force_host_platform_device_count=8", "")),
  ).stdout
  assert re.search(r"^visualbert: vlfusion \d+\.\d+ s/step, hf \d+\.\d+ s/step, speedup \d+\.\d+$", out,
                   re.MULTILINE), out
  assert re.search(r"^float32 matmul ceiling: XLA \d+ GFLOP/s, PyTorch \d+ GFLOP/s$", out, re.MULTILINE)
  assert re.search(r"of XLA's ceiling, hf .* of PyTorch's$", out, re.MULTILINE), out
  assert (tmp_path / "peers.json").exists()
  assert re.search(r"^machine: .+ \(.*\), \d+ cores, XLA CPU threads .*, torch .* threads\)", out,
                   re.MULTILINE), out


def test_the_machine_line_names_the_cpu_and_its_vector_extensions():
  from benchmarks import machine

  cpuinfo = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
             "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\n"
             "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n")
  d = machine.describe({"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false", "PJRT_NPROC": "4"}, cpuinfo)
  assert d["model"] == "Intel(R) Xeon(R) Platinum 8481C" and d["vendor"] == "GenuineIntel"
  assert d["extensions"] == ["AVX2", "FMA", "AVX-512", "AVX-512 BF16", "AMX", "AMX BF16"]
  line = machine.summary(d)
  assert line.startswith("Intel(R) Xeon(R) Platinum 8481C (GenuineIntel; AVX2, FMA, AVX-512, AVX-512 BF16, "
                         "AMX, AMX BF16), ")
  assert "XLA CPU threads 4" in line and "XLA_FLAGS=--xla_cpu_use_thunk_runtime=false" in line
  old = machine.describe({}, "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t: sse\n")
  assert old["extensions"] == [] and "no AVX2 or AVX-512" in machine.summary(old)


def test_scaling_plot_draws_every_family(tmp_path):
  from benchmarks import scaling

  points = lambda n0, k: [{"tokens": n, "step_s": 0.01 * k * n, "flops": 1e6 * n, "peak_bytes": 2**20 * n}
                          for n in (n0, 4 * n0)]
  results = {"image": {"single_stream": points(36, 1), "co_attention": points(36, 2)},
             "text": {"single_stream": points(20, 1), "co_attention": points(20, 2)}}
  out = str(tmp_path / "scaling.png")
  scaling.plot(results, out, "title")
  from PIL import Image

  image = Image.open(out)
  assert image.size == (2 * scaling.PANEL_W, 2 * scaling.PANEL_H + 24)
  colours = {c for _, c in image.getcolors(1 << 16)}
  assert set(scaling.COLOURS[:2]) <= colours  # both families' lines are drawn.
