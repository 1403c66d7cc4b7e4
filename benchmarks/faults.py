r"""Kills, damaged checkpoints and bad inputs: does a run lose a saved step, or let a fault pass silently?

  python benchmarks/faults.py                 # 10 kills, 5 corruptions (one of each kind), 19 bad inputs
  python benchmarks/faults.py --kills=30 --corruptions=10 --num_steps=200

It prepares the tiny shapes-world data once (--data_dir), trains `configs/pretrain/co_attention.py:tiny`
straight through with `train.py` for the reference, then trains the same command in another workdir through
a shuffled sequence of faults, restarting it after each:

- a kill: SIGKILL at a hidden moment (a random delay after a logged step: mid-step, mid-save or between);
- a corruption: the run is stopped (by the next kill, or by SIGTERM when kills run out), then the latest
  complete checkpoint is damaged in one of `KINDS` (a truncated or bit-flipped data file, the commit marker
  gone, the state folder gone, unreadable state metadata) before the restart.

Each restart's log says which step it resumed from. After a kill the run must resume from the newest
complete checkpoint; after a corruption from the newest one before the damaged step, and its log must name
the damaged step as moved aside. Then come the bad inputs (`bad_inputs`): config values and annotation
files that must be refused with an error naming the field, file or id, or skipped and counted at
preparation. It prints detail lines on stderr and one line on stdout:

  faults: <n> kills, <m> corruptions, <k> bad inputs: <s> steps lost, <q> silent, final params equal: <yes|no>

- steps lost: steps saved in a complete, undamaged checkpoint that a restart no longer restored (it resumed
  from an earlier step); redoing the steps after the checkpoint before a damaged one is not a loss.
- silent: faults neither refused with an error naming them, nor counted, nor recovered from (a damaged
  checkpoint restored, or skipped without a log line naming it; a bad input accepted, or refused by an error
  that does not name it).
- final params equal: `params_digest` of the final checkpoint of the faulted run equals the straight run's.

n and m count the faults that landed: a kill that would land after the run finished is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# This process restores checkpoints and builds setups for the tensor-parallel checks: 8 simulated devices.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_XLA}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from configs.pretrain import co_attention  # noqa: E402
from tests.data import fixtures as fx  # noqa: E402
from vlfusion import configuration, runtime  # noqa: E402
from vlfusion.data import local_datasets as ld  # noqa: E402
from vlfusion.data.local_files import DataFileError  # noqa: E402
from vlfusion.evaluation.digests import params_digest  # noqa: E402
from vlfusion.training import checkpointing, trainer  # noqa: E402

CONFIG = "configs/pretrain/co_attention.py:tiny"
KINDS = ("truncated", "bit_flipped", "no_commit_marker", "no_state", "unreadable_metadata")


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


# --- the training runs -------------------------------------------------------------------------------------


def _env(cache_dir: str) -> dict[str, str]:
  """One CPU device per training process; compiled programs shared through a cache (starts are the cost)."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}",
             PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=cache_dir)
  return env


def _command(workdir: str, args: argparse.Namespace) -> list[str]:
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--config={ROOT}/{CONFIG}", f"--workdir={workdir}",
          f"--config.data.data_dir={args.data_dir}", f"--config.train.num_steps={args.num_steps}",
          "--config.train.log_every_steps=1", "--config.train.keep_checkpoints=3",
          f"--config.train.checkpoint_every_steps={args.checkpoint_every}"]


def _logged_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.endswith("\n")]


def _complete_steps(workdir: str) -> list[int]:
  """Steps with their commit marker and every item: what a kill cannot have left half-written."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  torn = checkpointing.incomplete_checkpoints(directory)
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit() and n not in torn)


class _Run:
  """train.py started in `workdir`, its output in a log file next to it."""

  def __init__(self, workdir: str, args: argparse.Namespace, env: dict[str, str]):
    self.log_path = f"{workdir}.{time.time_ns()}.log"
    self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in `stop`.
    self.proc = subprocess.Popen(_command(workdir, args), env=env, stdout=self.log, stderr=subprocess.STDOUT)

  def wait_for(self, ready, timeout: float = 600) -> bool:
    """Waits until `ready()`; False if the process ended first."""
    deadline = time.time() + timeout
    while not ready():
      if self.proc.poll() is not None:
        return False
      if time.time() > deadline:
        self.proc.kill()
        raise RuntimeError(f"train.py made no progress in {timeout} s; log: {self.log_path}")
      time.sleep(0.05)
    return True

  def stop(self, sig: int | None) -> int:
    if sig is not None and self.proc.poll() is None:
      self.proc.send_signal(sig)
    code = self.proc.wait(timeout=600)
    self.log.close()
    return code

  def text(self) -> str:
    with open(self.log_path, errors="replace") as f:
      return f.read()


def _resumed_step(log: str) -> int | None:
  if re.search(r"No checkpoint in \S+: starting from step 0", log):
    return 0
  found = re.search(r"Resumed from step (\d+)\.", log)
  return int(found.group(1)) if found else None


def _moved_aside(log: str, workdir: str) -> set[int]:
  ckpts = re.escape(os.path.join(workdir, "checkpoints"))
  return {int(s) for s in re.findall(rf"Moved checkpoint {ckpts}/(\d+) aside to \d+\.torn-", log)}


# --- checkpoint damage -------------------------------------------------------------------------------------


def _largest_data_file(step_dir: str) -> str:
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
           if os.path.basename(d) == "d"]
  return max(files, key=os.path.getsize)


FLIP_TRIES = 20


def _flip(path: str, offset: int) -> None:
  """Inverts the 64 bytes at `offset` of `path` (doing it twice puts them back)."""
  with open(path, "r+b") as f:
    f.seek(offset)
    chunk = f.read(64)
    f.seek(offset)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _reads_differently(read_state, before: list) -> bool:
  """Whether a restore now fails, or gives other arrays than `before`."""
  try:
    after = read_state()
  except Exception:  # noqa: BLE001 - any refusal means the damage is seen.
    return True
  if len(after) != len(before):
    return True
  return not all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def corrupt(step_dir: str, kind: str, rng: random.Random, read_state=None) -> str:
  """Damages the checkpoint in `step_dir` in one of `KINDS`; returns what was done.

  An OCDBT data file also holds bytes that no restore reads (4 of 30 random 64-byte flips of one
  checkpoint's largest file landed there and restored every array bit for bit); which bytes those are
  moves with the order of the writes. With `read_state` (a restore of this step: its arrays, or an
  error), a flip that leaves what a restore reads unchanged is undone and another place drawn, so that a
  counted corruption always damages the checkpoint.
  """
  if kind == "truncated":
    path = _largest_data_file(step_dir)
    size = os.path.getsize(path)
    os.truncate(path, size // 2)
    return f"truncated {os.path.relpath(path, step_dir)} from {size} to {size // 2} bytes"
  if kind == "bit_flipped":
    path = _largest_data_file(step_dir)
    before = None if read_state is None else read_state()
    for _ in range(FLIP_TRIES):
      offset = rng.randrange(os.path.getsize(path) - 64)
      _flip(path, offset)
      if read_state is None or _reads_differently(read_state, before):
        return f"flipped 64 bytes at {offset} of {os.path.relpath(path, step_dir)}"
      _flip(path, offset)  # bytes no restore reads: put them back and draw again.
    raise RuntimeError(f"none of {FLIP_TRIES} flips of {path} changed what a restore of it reads")
  if kind == "no_commit_marker":
    os.remove(os.path.join(step_dir, checkpointing.COMMIT_MARKER))
    return f"removed {checkpointing.COMMIT_MARKER}"
  if kind == "no_state":
    shutil.rmtree(os.path.join(step_dir, "state"))
    return "removed state/"
  if kind == "unreadable_metadata":
    with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
      f.write("{not json")
    return "overwrote state/_METADATA with text that is not JSON"
  raise ValueError(f"unknown corruption kind {kind!r}; known: {KINDS}")


# --- the faulted run ---------------------------------------------------------------------------------------


def faulted_run(workdir: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, int]:
  """Trains in `workdir` through the kills and corruptions of `args`, restarting after each, to the end."""
  rng = random.Random(args.seed)
  kinds = [KINDS[i % len(KINDS)] for i in range(args.corruptions)]
  # Each stop is a kill (while kills last) or a SIGTERM, and may carry one corruption before the restart.
  stops = max(args.kills, len(kinds))
  damage = set(rng.sample(range(stops), len(kinds)))
  counts = {"kills": 0, "corruptions": 0, "lost": 0, "silent": 0}
  expect: tuple[int, str] | None = None  # (step the next start must resume from, what it follows)
  damaged: int | None = None
  for stop in range(stops + 1):
    run = _Run(workdir, args, env)
    last = stop == stops
    kill = not last and stop < args.kills
    corruption = kinds.pop() if stop in damage else None
    before = len(_logged_steps(workdir))
    # A corruption needs a checkpoint before the one it damages, or there is nothing to fall back to.
    need_steps = 1 if corruption is None else 2
    running = last or run.wait_for(
        lambda before=before, need=need_steps: len(_logged_steps(workdir)) > before
        and len(_complete_steps(workdir)) >= need)
    if running and not last:
      time.sleep(rng.uniform(0.0, args.max_kill_delay))  # the hidden moment.
    code = run.stop(None if last or run.proc.poll() is not None else
                    signal.SIGKILL if kill else signal.SIGTERM)
    log = run.text()
    if expect is not None:
      _check_resume(log, workdir, expect, damaged, counts)
    if last or not running or run.proc.returncode == 0 and _logged_steps(workdir)[-1:] == [args.num_steps]:
      if code != 0:
        raise RuntimeError(f"the final train.py exited with {code}; log: {run.log_path}")
      break
    counts["kills"] += kill
    complete = _complete_steps(workdir)
    damaged = None
    if corruption is not None and complete:
      damaged = complete[-1]
      what = corrupt(os.path.join(workdir, "checkpoints", str(damaged)), corruption, rng,
                     read_state=lambda step=damaged: read_state(workdir, step, args))
      counts["corruptions"] += 1
      expect = (complete[-2] if len(complete) > 1 else 0, f"{corruption} step {damaged}: {what}")
    else:
      expect = (complete[-1] if complete else 0, "kill" if kill else "SIGTERM")
    _say(f"stop {stop + 1}: {'SIGKILL' if kill else 'SIGTERM'} at logged step "
         f"{(_logged_steps(workdir) or [0])[-1]}; complete checkpoints {complete}; next start must resume "
         f"from {expect[0]} ({expect[1]})")
  steps = _logged_steps(workdir)
  if steps != list(range(1, args.num_steps + 1)):
    _say(f"metrics.jsonl does not hold steps 1..{args.num_steps} once each: {steps}")
    counts["silent"] += 1
  return counts


def _check_resume(log: str, workdir: str, expect: tuple[int, str], damaged: int | None,
                  counts: dict[str, int]) -> None:
  """Counts the steps lost and the silent faults of one restart, from its log."""
  want, what = expect
  got = _resumed_step(log)
  if got is None:
    raise RuntimeError(f"a restart logged no resume step:\n{log[-3000:]}")
  aside = _moved_aside(log, workdir)
  if got < want:
    counts["lost"] += want - got
    _say(f"  LOST: resumed from step {got}, not {want} ({what}); moved aside: {sorted(aside)}")
    if damaged is None and want not in aside:
      counts["silent"] += 1  # a complete checkpoint passed over without a word.
  if damaged is not None and (got >= damaged or damaged not in aside):
    counts["silent"] += 1
    _say(f"  SILENT: the damaged step {damaged} was {'restored' if got >= damaged else 'not named'} "
         f"({what})")


# --- bad inputs --------------------------------------------------------------------------------------------


def _config_value(field: str, value, message: str, setup: bool = False, **more):
  """A bad config value must be refused by validation (or by `Setup`, for what needs the mesh), naming it."""
  def check(data_dir: str, scratch: str) -> tuple[bool, str]:
    del scratch
    config = co_attention.get_config("tiny")
    config.unlock()
    config.data.data_dir = data_dir
    config = configuration.override(config, {field: value, **more})
    try:
      configuration.validate(config)
      if setup:
        trainer.Setup(config)
    except configuration.ConfigError as e:
      return bool(re.search(message, str(e))), str(e)
    return False, "accepted"
  return f"--config.{field}={value}" + "".join(f" --config.{k}={v}" for k, v in more.items()), check


def _unknown_field(data_dir: str, scratch: str) -> tuple[bool, str]:
  """Through train.py itself: the flags parser must refuse the field before anything is written."""
  workdir = os.path.join(scratch, "unknown_field")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), f"--config={ROOT}/{CONFIG}",
                         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
                         "--config.model.nonexistent=1"], capture_output=True, text=True, timeout=600)
  named = ("FATAL Flags parsing error: --config.model.nonexistent: config.model has no field 'nonexistent'"
           in proc.stderr)
  return proc.returncode != 0 and named and not os.path.exists(workdir), proc.stderr.strip()[-300:]


def _prepare(name: str, manual_dir: str, scratch: str):
  builder = ld.make_builder(name, os.path.join(scratch, "tfds"))
  ld.prepare(builder, manual_dir)
  return ld.make_builder(name, os.path.join(scratch, "tfds"))


def _data_file(name: str, write, edit, refused: str | None = None, counted: str | None = None):
  """Bad annotations written by `write` then `edit(root)`: refused (a `DataFileError` matching `refused`)
  or counted at preparation (`counted` in the split's skipped reasons)."""
  def check(data_dir: str, scratch: str) -> tuple[bool, str]:
    del data_dir
    root = os.path.join(scratch, "files")
    os.makedirs(root)
    write(root)
    edit(root)
    try:
      builder = _prepare(name, root, scratch)
    except DataFileError as e:
      return refused is not None and bool(re.search(refused, str(e))), str(e)[:300]
    skipped = builder.info.metadata.get("skipped", {}).get("train", {})
    return counted is not None and skipped.get(counted, 0) >= 1, f"prepared; skipped: {skipped}"
  return check


def _edit(file: str, change):
  return lambda root: fx.edit_json(os.path.join(root, file), change)


def _replace_bytes(file: str, old: bytes, new: bytes):
  def edit(root: str) -> None:
    path = os.path.join(root, file)
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data.replace(old, new, 1))
  return edit


def _jsonl_line(index: int, record: dict):
  def edit(root: str) -> None:
    path = os.path.join(root, "train.jsonl")
    with open(path) as f:
      lines = f.read().splitlines()
    lines[index] = json.dumps(record)
    with open(path, "w") as f:
      f.write("\n".join(lines) + "\n")
  return edit


COCO, VQA, JSONL = "coco_captions/images", "vqa_v2/images", "image_text_jsonl/images"
VQA_ANNOTATIONS = "v2_mscoco_train2014_annotations.json"
VQA_QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
_write_jsonl = lambda root: fx.write_jsonl(root, num_train=4)
_nothing = lambda root: None


def bad_inputs() -> list[tuple[str, object]]:
  """(what, check) for each bad input, config values and data files alternating; `check(data_dir,
  scratch)` returns (refused naming it or counted, what happened)."""
  config = [
      _config_value("train.keep_checkpoints", 0, r"config\.train\.keep_checkpoints=0 must be >= 1"),
      ("--config.model.nonexistent=1 (train.py)", _unknown_field),
      _config_value("model.image.patch_size", 0, r"config\.model\.image\.patch_size=0 must be a positive"),
      _config_value("data.max_text_len", 1, r"config\.data\.max_text_len=1 leaves no room"),
      _config_value("mesh.tensor", 4, r"logical axis 'heads'.*config\.mesh\.tensor=4", setup=True,
                    **{"mesh.data": 2, "mesh.fsdp": 1, "model.text.num_heads": 2,
                       "model.image.num_heads": 2}),
      _config_value("mesh.tensor", 4, r"30522, logical axis 'vocab', from config\.model\.text\.vocab_size",
                    setup=True, **{"mesh.data": 2, "mesh.fsdp": 1, "model.text.vocab_size": 30522}),
      _config_value("model.image.image_size", -64,
                    r"config\.model\.image\.image_size=-64 must be a positive"),
      _config_value("eval.tasks", ("vqa",), r"config\.eval\.tasks=\('vqa',\): none is a head",
                    **{"eval.every_steps": 0}),
      _config_value("model.text.vocab_size", 0, r"config\.model\.text\.vocab_size=0 must be a positive"),
  ]
  data = [
      ("COCO image with \"sentences\": []", _data_file(
          COCO, fx.write_coco, _edit("dataset_coco.json", lambda d: d["images"][2].update(sentences=[])),
          counted="no_text")),
      ("VQA \"answers\": []", _data_file(
          VQA, fx.write_vqa, _edit(VQA_ANNOTATIONS, lambda d: d["annotations"][1].update(answers=[])),
          counted="no_answers")),
      ("non-UTF-8 byte in a JSONL line", _data_file(
          JSONL, _write_jsonl, _replace_bytes("train.jsonl", b"train_2", b"tr\xffain_2"),
          refused=r"train\.jsonl: line 3: not UTF-8")),
      ("duplicate COCO cocoid", _data_file(
          COCO, fx.write_coco, _edit("dataset_coco.json", lambda d: d["images"][3].update(cocoid=101)),
          refused=r"dataset_coco\.json: images\[3\]: image 101 is listed twice")),
      ("VQA \"answers\": [3, 4]", _data_file(
          VQA, fx.write_vqa, _edit(VQA_ANNOTATIONS, lambda d: d["annotations"][1].update(answers=[3, 4])),
          refused=r"annotations\[1\] \(question_id 11\): answers\[0\] is int")),
      ("duplicate VQA question_id", _data_file(
          VQA, fx.write_vqa, _edit(VQA_QUESTIONS, lambda d: d["questions"][2].update(question_id=10)),
          refused=r"questions\[2\]: question_id 10 is listed twice")),
      ("VQA annotation and question image_id disagree", _data_file(
          VQA, fx.write_vqa, _edit(VQA_ANNOTATIONS, lambda d: d["annotations"][1].update(image_id=2)),
          refused=r"question_id 11 is about image_id 1 in .* but image_id 2")),
      ("non-UTF-8 byte in dataset_coco.json", _data_file(
          COCO, fx.write_coco, _replace_bytes("dataset_coco.json", b"a dog runs", b"\xe9 dog runs"),
          refused=r"dataset_coco\.json: byte \d+ \(line 1\): not UTF-8")),
      ("JSONL line with \"text\": \"\"", _data_file(
          JSONL, _write_jsonl, _jsonl_line(0, {"image": "img/train_0.jpg", "text": ""}), counted="no_text")),
      ("COCO image that is not a JPEG", _data_file(
          COCO, lambda root: fx.write_coco(root, corrupt_ids=(101,)), _nothing, counted="corrupt_image")),
  ]
  mixed = []
  for i in range(max(len(config), len(data))):
    mixed += config[i:i + 1] + data[i:i + 1]
  return mixed


def check_bad_inputs(count: int, data_dir: str, scratch: str) -> tuple[int, int]:
  """Runs the first `count` bad inputs; returns (how many ran, how many passed silently)."""
  cases = bad_inputs()
  if count > len(cases):
    raise ValueError(f"--bad_inputs={count}: there are {len(cases)}")
  silent = 0
  for i, (what, check) in enumerate(cases[:count]):
    folder = os.path.join(scratch, f"bad_{i}")
    os.makedirs(folder)
    try:
      ok, detail = check(data_dir, folder)
    except Exception as e:  # noqa: BLE001 - an error that names nothing is a silent fault here.
      ok, detail = False, f"{type(e).__name__}: {e}"[:300]
    silent += not ok
    last = detail.splitlines()[-1] if detail else ""
    _say(f"bad input {i + 1}: {what}: {'ok' if ok else 'SILENT'}: {last}")
  return min(count, len(cases)), silent


# --- main --------------------------------------------------------------------------------------------------


_ABSTRACT: dict[tuple, tuple] = {}


def _restore(workdir: str, args: argparse.Namespace, step: int | None = None):
  """(state, step) of `workdir`'s checkpoint `step` (default: the latest), read-only, as train.py would
  restore it; raises what a restore raises on a damaged checkpoint."""
  key = (args.data_dir, args.num_steps)
  if key not in _ABSTRACT:
    config = co_attention.get_config("tiny")
    config.unlock()
    config.data.data_dir = args.data_dir
    config.train.num_steps = args.num_steps
    _ABSTRACT[key] = config, trainer.Setup(config).abstract_state
  config, abstract = _ABSTRACT[key]
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  try:
    state, _, restored = checkpointing.restore(manager, abstract, step=step)
  finally:
    manager.close()
  return state, restored


def read_state(workdir: str, step: int, args: argparse.Namespace) -> list:
  """Every array of checkpoint `step`, as a restore reads them."""
  import jax

  return [np.asarray(a) for a in jax.tree.leaves(_restore(workdir, args, step)[0])]


def final_digest(workdir: str, args: argparse.Namespace) -> str:
  state, step = _restore(workdir, args)
  if step != args.num_steps:
    raise RuntimeError(f"{workdir}: the final checkpoint is step {step}, not {args.num_steps}")
  return params_digest(state.params)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kills", type=int, default=10, help="SIGKILLs at hidden moments")
  parser.add_argument("--corruptions", type=int, default=len(KINDS),
                      help=f"damaged checkpoints, cycling through {', '.join(KINDS)}")
  parser.add_argument("--bad_inputs", type=int, default=len(bad_inputs()), help="bad config values and files")
  parser.add_argument("--num_steps", type=int, default=0,
                      help="training steps (0: 5 per kill or corruption, plus 10)")
  parser.add_argument("--checkpoint_every", type=int, default=3)
  parser.add_argument("--max_kill_delay", type=float, default=1.5,
                      help="a kill lands up to this many seconds after a logged step")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default="",
                      help="tfds data dir, prepared once (default: under --scratch)")
  parser.add_argument("--scratch", default="", help="folder for the runs (default: a temporary one, removed)")
  args = parser.parse_args()
  runtime.quiet_tfds()
  logging.set_verbosity(logging.WARNING)
  scratch = args.scratch or tempfile.mkdtemp(prefix="vlfusion_faults_")
  os.makedirs(scratch, exist_ok=True)
  args.data_dir = args.data_dir or os.path.join(scratch, "data")
  args.num_steps = args.num_steps or 5 * max(args.kills, args.corruptions) + 10
  env = _env(os.path.join(scratch, "xla_cache"))
  try:
    straight = os.path.join(scratch, f"straight_{time.time_ns()}")
    # The straight run prepares the data (once) and fills the compilation cache for the faulted one.
    run = _Run(straight, args, env)
    if run.stop(None) != 0:
      raise RuntimeError(f"the straight run failed; log: {run.log_path}")
    faulted = os.path.join(scratch, f"faulted_{time.time_ns()}")
    counts = faulted_run(faulted, args, env)
    bad, bad_silent = check_bad_inputs(args.bad_inputs, args.data_dir, os.path.join(scratch, "bad_inputs"))
    equal = final_digest(straight, args) == final_digest(faulted, args)
  finally:
    if not args.scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  print(f"faults: {counts['kills']} kills, {counts['corruptions']} corruptions, {bad} bad inputs: "
        f"{counts['lost']} steps lost, {counts['silent'] + bad_silent} silent, "
        f"final params equal: {'yes' if equal else 'no'}", flush=True)


if __name__ == "__main__":
  main()
