r"""vlfusion against the HF transformers (PyTorch) LXMERT, VisualBERT and ViLT, side by side.

  python benchmarks/peers.py                                  # base size, batch 8: a few minutes per model
  python benchmarks/peers.py --size=tiny --rounds=2 --steps=1 --warmup=1   # smoke test, seconds

Both sides train the same architecture on the same random batch: random weights, float32, dropout as the
vlfusion config has it, MLM + ITM heads, the loss, its gradient, global-norm clipping and one AdamW update
per step (PyTorch: the fused AdamW that HF's Trainer defaults to, no decay on biases and LayerNorm).
LXMERT and VisualBERT read 36 x 2048-d regions, ViLT a 384 px image in 32 px patches; text is 20 tokens
with 15% of them masked. Sizes come from the vlfusion config (`--size`), so the two sides always match.

After `--warmup` steps of each, the two sides are timed in alternating rounds (vlfusion first in even
rounds, PyTorch first in odd ones) of `--steps` steps; a side's time is the median of its rounds. Then
the float32 matrix-multiply ceiling of XLA and of PyTorch is measured in the same process, and each side's
achieved FLOP/s is given as a fraction of its own ceiling. FLOPs per step are XLA's cost analysis of the
compiled vlfusion step, for both sides: the HF step does at least that much work.

Output: one line per model, `<model>: vlfusion <t> s/step, hf <t> s/step, speedup <hf/vlfusion>`, then
the ceilings and fractions; `--json=PATH` writes everything measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import describe as describe_machine  # noqa: E402
from benchmarks.machine import summary as summarize_machine  # noqa: E402
from benchmarks.train_step import load_config, synthetic_batch  # noqa: E402
from vlfusion import partitioning  # noqa: E402
from vlfusion.training import trainer  # noqa: E402

CONFIGS = {
    "lxmert": "configs/pretrain/lxmert.py",
    "visualbert": "configs/pretrain/visualbert.py",
    "vilt": "configs/pretrain/vilt.py",
}


def vlfusion_config(model: str, size: str, batch_size: int, text_len: int):
  """The vlfusion config of `model` at `size`, reduced to MLM + ITM at this batch and text length."""
  config = load_config(f"{CONFIGS[model]}:{size}")
  config.model.heads = ("mlm", "itm")
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.data.global_batch_size = batch_size
  config.data.max_text_len = text_len
  config.mesh.data = 1
  return config


class VlfusionRunner:
  """The jitted vlfusion train step on a fixed synthetic batch; `run(n)` takes n steps."""

  def __init__(self, config, batch):
    self.setup = trainer.Setup(config, jax.devices()[:1])
    self.state = self.setup.initial_state()
    with jax.set_mesh(self.setup.mesh), nn.logical_axis_rules(self.setup.rules):
      self.batch = partitioning.to_global_batch(batch, self.setup.mesh)
      start = time.perf_counter()
      self.step = self.setup.jit_train_step().lower(self.state, self.batch).compile()
      self.compile_seconds = time.perf_counter() - start
      self.flops = self.setup.flops_per_device_step(self.step, self.batch)
    self.loss = None

  def run(self, n: int) -> None:
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    self.loss = float(metrics["loss"])


def torch_model(model: str, config):
  """The HF transformers model of `model` with the vlfusion config's sizes, and a loss(batch) closure."""
  import torch
  import transformers

  m = config.model
  common = dict(
      vocab_size=m.text.vocab_size, hidden_size=m.text.hidden_size,
      num_attention_heads=m.text.num_heads, intermediate_size=m.text.mlp_dim,
      hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.attention_dropout,
      layer_norm_eps=m.layer_norm_eps, max_position_embeddings=m.text.max_len, hidden_act="gelu",
  )
  ce = torch.nn.functional.cross_entropy

  if model == "lxmert":
    hf = transformers.LxmertForPreTraining(transformers.LxmertConfig(
        **common, l_layers=m.text.num_layers, r_layers=m.image.num_layers, x_layers=m.fusion_layers,
        visual_feat_dim=m.image.feature_dim, visual_pos_dim=m.image.box_dim,
        task_mask_lm=True, task_matched=True, task_obj_predict=False, task_qa=False))

    def loss(b):
      out = hf(input_ids=b["text_ids"], attention_mask=b["text_mask"], visual_feats=b["features"],
               visual_pos=b["boxes"], visual_attention_mask=b["region_mask"])
      return mlm_itm(out.prediction_logits, out.cross_relationship_score, b)

  elif model == "visualbert":
    hf = transformers.VisualBertForPreTraining(transformers.VisualBertConfig(
        **common, num_hidden_layers=m.fusion_layers, visual_embedding_dim=m.image.feature_dim))

    def loss(b):
      out = hf(input_ids=b["text_ids"], attention_mask=b["text_mask"], visual_embeds=b["features"],
               visual_attention_mask=b["region_mask"])
      lt = b["text_ids"].shape[1]
      return mlm_itm(out.prediction_logits[:, :lt], out.seq_relationship_logits, b)

  elif model == "vilt":
    vilt_config = transformers.ViltConfig(
        **{k: v for k, v in common.items() if k != "max_position_embeddings"},
        max_position_embeddings=m.text.max_len, num_hidden_layers=m.fusion_layers,
        image_size=m.image.image_size, patch_size=m.image.patch_size, qkv_bias=True)
    hf = transformers.ViltForMaskedLM(vilt_config)
    # ViLT's ITM head (a linear layer on the pooled output); HF has no pretraining class with it.
    itm = torch.nn.Linear(vilt_config.hidden_size, 2)
    hf.add_module("itm_score", itm)

    def loss(b):
      out = hf.vilt(input_ids=b["text_ids"], attention_mask=b["text_mask"],
                    pixel_values=b["pixels"], pixel_mask=b["pixel_mask"])
      lt = b["text_ids"].shape[1]
      return mlm_itm(hf.mlm_score(out.last_hidden_state[:, :lt]), itm(out.pooler_output), b)

  else:
    raise ValueError(model)

  def mlm_itm(mlm_logits, itm_logits, b):
    mlm = ce(mlm_logits.reshape(-1, mlm_logits.shape[-1]), b["mlm_labels"].reshape(-1),
             ignore_index=-100)
    return mlm + ce(itm_logits, b["itm_labels"])

  return hf, loss


class TorchRunner:
  """The HF model's train step: loss, backward, clip to norm 1, fused AdamW (as HF's Trainer)."""

  def __init__(self, model: str, config, batch):
    import torch

    torch.manual_seed(0)
    self.torch = torch
    self.model, self.loss_fn = torch_model(model, config)
    self.model.train()
    decay, no_decay = [], []
    for name, p in self.model.named_parameters():
      (no_decay if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name else decay).append(p)
    o = config.optimizer
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
      self.optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(o.b1, o.b2), eps=o.eps, fused=True)
    except (RuntimeError, TypeError):  # a build without the fused CPU kernel.
      self.optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(o.b1, o.b2), eps=o.eps)
    t = lambda x, dtype=None: torch.as_tensor(np.asarray(x), dtype=dtype)
    b = {
        "text_ids": t(batch["text_ids"], torch.long),
        "text_mask": t(batch["text_mask"], torch.long),
        "itm_labels": t(batch["itm_labels"], torch.long),
        "mlm_labels": t(np.where(batch["mlm_weights"] > 0, batch["mlm_targets"], -100), torch.long),
    }
    if "regions" in batch:
      b["features"] = t(batch["regions"]["features"])
      b["boxes"] = t(batch["regions"]["boxes"])
      b["region_mask"] = t(batch["regions"]["mask"], torch.long)
    else:
      b["pixels"] = t(np.transpose(batch["image"], (0, 3, 1, 2))).contiguous()
      b["pixel_mask"] = torch.ones(b["pixels"].shape[0], *b["pixels"].shape[2:], dtype=torch.long)
    self.batch = b
    self.num_params = sum(p.numel() for p in self.model.parameters())
    self.loss = None

  def run(self, n: int) -> None:
    for _ in range(n):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.loss_fn(self.batch)
      loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
    self.loss = float(loss.detach())


def time_matmul(fn, n: int, repeats: int) -> float:
  """Best FLOP/s of `fn()` (one n x n x n float32 matmul, blocking) over `repeats` calls."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def matmul_ceilings(sizes: tuple[int, ...], repeats: int) -> dict[str, float]:
  """The float32 matmul FLOP/s of XLA and of PyTorch on this CPU: the best over square sizes `sizes`."""
  import torch

  out = {"xla": 0.0, "torch": 0.0}
  rng = np.random.default_rng(0)
  for n in sizes:
    a, b = rng.normal(size=(2, n, n)).astype(np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    xla = lambda mm=mm, ja=ja, jb=jb: mm(ja, jb).block_until_ready()
    out["xla"] = max(out["xla"], time_matmul(xla, n, repeats))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch"] = max(out["torch"], time_matmul(lambda ta=ta, tb=tb: torch.mm(ta, tb), n, repeats))
  return out


def compare(model: str, args) -> dict:
  config = vlfusion_config(model, args.size, args.batch_size, args.text_len)
  batch = synthetic_batch(config, seed=0)
  vlf = VlfusionRunner(config, batch)
  hf = TorchRunner(model, config, batch)
  vlf.run(args.warmup)
  hf.run(args.warmup)
  times = {"vlfusion": [], "hf": []}
  for r in range(args.rounds):
    order = [("vlfusion", vlf), ("hf", hf)]
    for name, runner in order if r % 2 == 0 else order[::-1]:
      start = time.perf_counter()
      runner.run(args.steps)
      times[name].append((time.perf_counter() - start) / args.steps)
  med = {k: statistics.median(v) for k, v in times.items()}
  num_params = sum(x.size for x in jax.tree.leaves(vlf.state.params))
  return {"model": model, "vlfusion_s": med["vlfusion"], "hf_s": med["hf"],
          "speedup": med["hf"] / med["vlfusion"], "rounds": times, "flops": vlf.flops,
          "compile_s": vlf.compile_seconds, "params_vlfusion": int(num_params),
          "params_hf": int(hf.num_params), "loss_vlfusion": vlf.loss, "loss_hf": hf.loss}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="lxmert,visualbert,vilt")
  parser.add_argument("--size", default="base", help="tiny | small | base (the vlfusion config's sizes)")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--text_len", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each side")
  parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
  parser.add_argument("--steps", type=int, default=2, help="steps per round")
  parser.add_argument("--matmul_sizes", default="1024,2048", help="square sizes for the ceiling")
  parser.add_argument("--json", default="", help="also write the results to this file")
  args = parser.parse_args()


  results = []
  for model in (m.strip() for m in args.models.split(",") if m.strip()):
    r = compare(model, args)
    results.append(r)
    print(f"{r['model']}: vlfusion {r['vlfusion_s']:.3f} s/step, hf {r['hf_s']:.3f} s/step, "
          f"speedup {r['speedup']:.2f}", flush=True)
  ceilings = matmul_ceilings(tuple(int(n) for n in args.matmul_sizes.split(",")), repeats=5)
  print(f"float32 matmul ceiling: XLA {ceilings['xla'] / 1e9:.0f} GFLOP/s, "
        f"PyTorch {ceilings['torch'] / 1e9:.0f} GFLOP/s")
  for r in results:
    if r["flops"]:
      vf = r["flops"] / r["vlfusion_s"]
      hf = r["flops"] / r["hf_s"]
      r["vlfusion_ceiling_fraction"] = vf / ceilings["xla"]
      r["hf_ceiling_fraction"] = hf / ceilings["torch"]
      print(f"{r['model']}: {r['flops'] / 1e9:.1f} GFLOP/step; vlfusion {vf / 1e9:.0f} GFLOP/s = "
            f"{r['vlfusion_ceiling_fraction']:.0%} of XLA's ceiling, hf {hf / 1e9:.0f} GFLOP/s = "
            f"{r['hf_ceiling_fraction']:.0%} of PyTorch's")
  machine = describe_machine()
  print(f"machine: {summarize_machine(machine)}; size {args.size}, batch {args.batch_size}, "
        f"text {args.text_len}, {args.rounds} rounds x {args.steps} steps")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "machine": machine, "ceilings": ceilings, "results": results}, f,
                indent=1)


if __name__ == "__main__":
  main()
