r"""Where a train step's time goes, by ablation: the step next to variants without one of its parts.

  python benchmarks/profile_step.py --config=configs/pretrain/visualbert.py:base --batch_size=8 \
      --text_len=20 --parts=forward,grad,no_mlm,no_dropout
  python benchmarks/profile_step.py --dump=/tmp/hlo     # also write XLA's optimised HLO of the step

On a CPU, where no trace viewer ships with the test requirements, taking a part away and timing the
rest is the most direct profile: `forward` is the loss alone, `grad` the loss and its gradient (the step
without the optimizer update), `no_mlm` the step without the MLM head, `no_dropout` with dropout off,
`no_clip` without gradient clipping, `masked_mlm` with the MLM decoder over the masked positions only
(opt-in: `train_step(masked_mlm=True)`; the default step decodes every text position). Each
variant is compiled on its own and all are timed in alternating rounds (median of rounds), so they share
the machine's load. `--dump` sets
`--xla_dump_to` for the HLO after optimisation (fusions, layouts), to read alongside.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pretrain/visualbert.py:tiny")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--text_len", type=int, default=20)
  parser.add_argument("--parts", default="forward,grad,no_mlm,no_dropout,no_clip")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--dump", default="", help="directory for XLA's HLO dumps")
  args = parser.parse_args()
  if args.dump:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={args.dump} --xla_dump_hlo_as_text").strip()

  import flax.linen as nn
  import jax

  from benchmarks.train_step import load_config, synthetic_batch
  from vlfusion import partitioning
  from vlfusion.training import losses, trainer

  def make(part: str):
    config = load_config(args.config)
    config.data.global_batch_size = args.batch_size
    config.data.max_text_len = args.text_len
    config.model.heads = tuple(h for h in config.model.heads if h in ("mlm", "itm"))
    config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
    config.mesh.data = 1
    if part == "no_mlm":
      config.model.heads = ("itm",)
      config.objectives["mlm"] = 0.0
    if part == "no_dropout":
      config.model.dropout = 0.0
    if part == "no_clip":
      config.optimizer.grad_clip_norm = 0.0
    setup = trainer.Setup(config, jax.devices()[:1])
    state = setup.initial_state()
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
      batch = partitioning.to_global_batch(synthetic_batch(config, 0), setup.mesh)
      weights = dict(config.objectives)

      def loss(params, batch, rng):
        outputs = setup.model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        return losses.total_loss(outputs, batch, weights)[0]

      rng = jax.random.PRNGKey(0)
      if part == "forward":
        fn = jax.jit(loss).lower(state.params, batch, rng).compile()
        call = lambda: fn(state.params, batch, rng)
      elif part == "grad":
        fn = jax.jit(jax.grad(loss)).lower(state.params, batch, rng).compile()
        call = lambda: fn(state.params, batch, rng)
      else:
        jitted = setup.jit_train_step()
        if part == "masked_mlm":
          jitted = jax.jit(functools.partial(setup.step_function(), masked_mlm=True),
                           in_shardings=(setup.state_shardings, partitioning.batch_sharding(setup.mesh)),
                           out_shardings=(setup.state_shardings, partitioning.replicated(setup.mesh)),
                           donate_argnums=(0,))
        fn = jitted.lower(state, batch).compile()
        holder = [state]

        def call():
          holder[0], metrics = fn(holder[0], batch)
          return metrics
    return call

  parts = ["step"] + [p for p in args.parts.split(",") if p]
  calls = {}
  for p in parts:
    start = time.perf_counter()
    calls[p] = make(p)
    jax.block_until_ready(calls[p]())
    if args.dump:
      print(f"HLO of the step written under {args.dump}")
      return
    print(f"compiled {p} in {time.perf_counter() - start:.0f} s", flush=True)
  times = {p: [] for p in parts}
  for r in range(args.rounds):
    for p in parts if r % 2 == 0 else parts[::-1]:
      start = time.perf_counter()
      for _ in range(args.steps):
        out = calls[p]()
      jax.block_until_ready(out)
      times[p].append((time.perf_counter() - start) / args.steps)
  step = statistics.median(times["step"])
  print(f"{args.config}  batch {args.batch_size}  text {args.text_len}")
  for p in parts:
    t = statistics.median(times[p])
    print(f"{p:12s} {t:.3f} s  ({t / step:.0%} of the step; step minus this {step - t:+.3f} s)")


if __name__ == "__main__":
  main()
