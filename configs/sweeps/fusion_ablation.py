r"""The fusion study: every fusion family at matched parameters, pretrained (MLM + ITM), then tuned on VQA.

  python -m vlfusion.analysis.sweep --sweep=configs/sweeps/fusion_ablation.py --root=runs/fusion_ablation
  python -m vlfusion.analysis.report --root=runs/fusion_ablation

Seven variants x three seeds on the shapes world at tiny size: single_stream, co_attention in the LXMERT
(cross -> self -> FFN), METER (self -> cross -> FFN) and ViLBERT (co-attention + FFN, then self) orders,
merged_attention, one_way and the dual encoder (no cross-modal attention, the control). Everything but
the fusion is shared: the co_attention tiny config with the pixel model of the VQA recipe
(`configs/finetune/vqa.py` RECIPES["tiny"]: conv stem, pre-LN, a normal(0.1) position table,
initializer_range 0.1, no dropout) and its optimizer, in both stages. Each family keeps its natural
pooler: the fused text [CLS] ("text"), the dual encoder the product of both [CLS] projections (a
linear head on a concatenation cannot score agreement). LXMERT's shared cross-attention is left off,
so the three co-attention variants differ in layer order only.

Parameters are matched to co_lxmert (all parameters of the pretraining model, heads included, within
2%): first the width of both streams (MLP = 2x width; a multiple of 32, which the conv stem's GroupNorm
groups need), then the MLP width.
Sized for about an hour of an unshared 2-core CPU (an estimate: docs/sweeps.md).
"""

from configs.finetune import vqa

# The VQA recipe's model and optimizer, for both stages: a fine-tuned checkpoint must fit its model.
RECIPE = {k: v for k, v in vqa.RECIPES["tiny"].items() if k.startswith(("model.", "optimizer."))}
BATCH = 32
PRETRAIN_STEPS = 600
VQA_STEPS = 600
EVAL_POINTS = 4  # validation evaluations per stage: the curves of the report.


def _schedule(num_steps):
  every = max(num_steps // EVAL_POINTS, 1)
  return {"train.num_steps": num_steps, "eval.every_steps": every, "train.checkpoint_every_steps": every,
          "train.log_every_steps": max(num_steps // 20, 1), "train.keep_checkpoints": 1,
          "data.global_batch_size": BATCH, "optimizer.warmup_steps": min(300, num_steps // 5)}


FUSIONS = {
    "single_stream": {"model.fusion": "single_stream", "model.text.num_layers": 0,
                      "model.image.num_layers": 0, "model.fusion_layers": 4},
    "co_lxmert": {"model.cross.order": "cross_self_ffn"},
    "co_meter": {"model.cross.order": "self_cross_ffn"},
    "co_vilbert": {"model.cross.order": "coattn_ffn_self"},
    "merged": {"model.fusion": "merged_attention"},
    "one_way": {"model.fusion": "one_way"},
    "dual_encoder": {"model.fusion": "dual_encoder", "model.fusion_layers": 0, "model.pooler": "product"},
}

SEEDS = {f"s{seed}": {"train.seed": seed} for seed in (0, 1, 2)}


def get_sweep():
  return {
      "description": "fusion families at matched parameters: MLM + ITM pretraining, then VQA",
      "stages": [
          {"name": "pretrain", "config": "configs/pretrain/co_attention.py:tiny",
           "overrides": {**RECIPE, **_schedule(PRETRAIN_STEPS)}},
          {"name": "vqa", "config": "configs/finetune/vqa.py:tiny,family=co_attention",
           "init_from": "pretrain", "overrides": _schedule(VQA_STEPS)},
      ],
      "axes": {"fusion": FUSIONS, "seed": SEEDS},
      "seed_axis": "seed",
      "match": {
          "by": "params", "target": "co_lxmert", "stage": "pretrain", "tolerance": 0.02,
          "scale": [
              {"fields": {"model.text.hidden_size": 1, "model.image.hidden_size": 1,
                          "model.text.mlp_dim": 2, "model.image.mlp_dim": 2}, "multiple_of": 32, "min": 32},
              {"fields": {"model.text.mlp_dim": 1, "model.image.mlp_dim": 1}, "min": 16},
          ],
      },
  }
