r"""Pair reasoning (NLVR2-style: is a statement true of two images?) fine-tuning of any family's model.

  python train.py --config=configs/pretrain/co_attention.py:tiny --workdir=W_pre
  python train.py --config=configs/finetune/pairs.py:tiny,family=co_attention \
      --config.init.checkpoint=W_pre --workdir=W_pairs
  python eval.py  --config=configs/finetune/pairs.py:tiny,family=co_attention --workdir=W_pairs

The argument is `size[,family=<configs/pretrain file>]`, family co_attention by default. Both images are
encoded with the statement and the two pooled outputs are classified together (as LXMERT and UNITER's
pair setting). Without `config.init` the run trains from scratch. Base size is the published schedule
(LXMERT's NLVR2: lr 5e-5, linear decay, 4 epochs of 86k pairs; ViLT's 10x head learning rate).
"""

from configs.finetune.common import finetune_config, finish
from vlfusion import configuration

PAPER = "pair reasoning fine-tuning as LXMERT (Tan & Bansal, 2019) on NLVR2"

SCHEDULES = {
    "tiny": {"optimizer.learning_rate": 1e-3, "optimizer.warmup_steps": 100,
             "optimizer.schedule": "cosine", "data.global_batch_size": 32, "train.num_steps": 2000},
    "small": {"optimizer.learning_rate": 3e-4, "optimizer.warmup_steps": 500,
              "optimizer.schedule": "cosine", "data.global_batch_size": 64, "train.num_steps": 5000},
    "base": {"optimizer.learning_rate": 5e-5, "optimizer.lr_multipliers": "heads_pairs:10",
             "optimizer.warmup_steps": 300, "optimizer.schedule": "linear",
             "data.global_batch_size": 128, "train.num_steps": 2700},
}


def get_config(arg=None):
  config, size, _ = finetune_config(arg, "pairs")
  if size == "base":
    config.data.name = "shapes_world/base"  # NLVR2 is not read yet: the shapes world's pairs.
  configuration.override(config, SCHEDULES[size])
  return finish(config)
