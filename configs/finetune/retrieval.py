r"""Image-text retrieval fine-tuning (ITC + ITM, as ALBEF) of any pretraining family's model.

  python train.py --config=configs/pretrain/albef.py:tiny --workdir=W_pre
  python train.py --config=configs/finetune/retrieval.py:tiny,family=albef \
      --config.init.checkpoint=W_pre --workdir=W_ret
  python eval.py  --config=configs/finetune/retrieval.py:tiny,family=albef --workdir=W_ret

The argument is `size[,family=<configs/pretrain file>]`, family albef by default; the dual encoder
trains ITC alone. Without `config.init` the run trains from scratch. Base size is the published schedule
on COCO (ALBEF: lr 1e-5, cosine, 5 epochs of the Karpathy train split's ~566k pairs at batch 256) and
expects real data and a base-size pretraining workdir (`configs/pretrain/albef.py:base`, W_pre_base):

  python train.py --config=configs/finetune/retrieval.py:base,family=albef \
      --config.data.manual_dir=/data/coco --config.data.vocab_path=/data/bert-base-uncased/vocab.txt \
      --config.init.checkpoint=W_pre_base --workdir=W_ret_base
"""

from configs.finetune.common import finetune_config, finish
from vlfusion import configuration

PAPER = "retrieval fine-tuning as ALBEF (Li et al., 2021)"

SCHEDULES = {
    "tiny": {"optimizer.learning_rate": 5e-4, "optimizer.warmup_steps": 100,
             "data.global_batch_size": 32, "train.num_steps": 1000},
    "small": {"optimizer.learning_rate": 1e-4, "optimizer.warmup_steps": 300,
              "data.global_batch_size": 64, "train.num_steps": 3000},
    "base": {"optimizer.learning_rate": 1e-5, "optimizer.warmup_steps": 1000,
             "data.global_batch_size": 256, "train.num_steps": 11_000},
}


def get_config(arg=None):
  config, size, _ = finetune_config(arg, "retrieval", default_family="albef")
  if size == "base":
    config.data.name = ("coco_captions/regions" if config.model.image.input == "regions"
                        else "coco_captions/images")
  config.optimizer.schedule = "cosine"
  configuration.override(config, SCHEDULES[size])
  return finish(config)
