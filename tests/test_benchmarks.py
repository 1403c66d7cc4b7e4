"""The README's benchmark commands run and print what they promise (tiny sizes; nothing is timed)."""

import os
import re
import subprocess
import sys

import numpy as np
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


@pytest.mark.slow
def test_faults_loses_nothing_and_lets_nothing_pass_silently(tmp_path):
  """One kill, two corruptions and a few bad inputs (tests/reliability/test_nothing_lost.py covers every
  corruption kind one by one); the one line and its verdict."""
  out = subprocess.run(
      [sys.executable, "benchmarks/faults.py", "--kills=1", "--corruptions=2", "--bad_inputs=4",
       "--num_steps=18", f"--scratch={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  line = out.stdout.strip()
  assert re.fullmatch(r"faults: \d+ kills, \d+ corruptions, \d+ bad inputs: \d+ steps lost, \d+ silent, "
                      r"final params equal: (yes|no)", line), line
  assert line.startswith("faults: 1 kills, 2 corruptions, 4 bad inputs: "), (line, out.stderr[-3000:])
  assert line.endswith(": 0 steps lost, 0 silent, final params equal: yes"), (line, out.stderr[-3000:])


def test_a_bit_flip_that_no_restore_reads_is_drawn_again(tmp_path):
  """The fault benchmark's `bit_flipped` damage: a flip whose bytes a restore never reads (OCDBT files hold
  some) would restore bit for bit and be counted as a silent fault; it is undone and drawn again."""
  import random

  from benchmarks import faults

  step_dir = tmp_path / "7"
  data = step_dir / "state" / "d"
  data.mkdir(parents=True)
  original = bytes(range(256)) * 4
  (data / "file").write_bytes(original)
  live = slice(0, 512)  # the bytes this stand-in restore reads.
  read = lambda: [np.frombuffer((data / "file").read_bytes()[live], np.uint8)]
  what = faults.corrupt(str(step_dir), "bit_flipped", random.Random(3), read_state=read)
  offset = int(what.split(" at ")[1].split()[0])
  damaged = (data / "file").read_bytes()
  assert offset < 512 and damaged[offset:offset + 64] != original[offset:offset + 64]
  assert damaged[:offset] + damaged[offset + 64:] == original[:offset] + original[offset + 64:]  # only it.
  live = slice(2048, 4096)  # no byte of the file is read: no flip can damage it.
  with pytest.raises(RuntimeError, match="none of 20 flips"):
    faults.corrupt(str(step_dir), "bit_flipped", random.Random(3), read_state=read)
  assert (data / "file").read_bytes() == damaged  # every unseen flip was put back.
