r"""Visual entailment (SNLI-VE) fine-tuning of any pretraining family's model: does the image entail,
contradict, or leave open a hypothesis? (task `ve`; results under `ve` in `eval/step_<N>.json`)

  python train.py --config=configs/pretrain/co_attention.py:tiny --config.model.pre_norm=True --workdir=W_pre
  python train.py --config=configs/finetune/snli_ve.py:tiny,family=co_attention \
      --config.init.checkpoint=W_pre --workdir=W_ve
  python eval.py  --config=configs/finetune/snli_ve.py:tiny,family=co_attention --workdir=W_ve

Without `config.init` the run trains from scratch. Below base size the data is the shapes world's
visual entailment (`shapes_world_ve/<size>`: statements true, false or undecidable because of an
occluder, labels balanced so that the text alone says nothing); `ve.accuracy` comes with
`accuracy_shuffled_images`, `text_prior_accuracy` and `by_label`: a model that reads the image beats
its text prior, and falls to it with the images shuffled.

SNLI-VE on disk (docs/data.md: the release's JSONL files and the Flickr30K images, or region features
for `regions` models), with BERT's uncased vocab:

  python train.py --config=configs/finetune/snli_ve.py:base,family=vilt \
      --config.data.manual_dir=/data/snli_ve --config.data.vocab_path=/data/bert-base-uncased/vocab.txt \
      --config.init.huggingface=/path/to/vilt-b32-mlm --workdir=W_ve

The argument is `size[,family=<configs/pretrain file>]`, family co_attention by default. The head is
UNITER's VE head (Linear -> GELU -> LayerNorm -> Linear(3) on the pooled output), trained with three-way
cross-entropy as ALBEF. Base size follows UNITER's VE schedule (lr 8e-5, 4000 steps with 400 of
warm-up, linear decay) at batch 256 with ViLT's 10x head learning rate; tiny and small are first,
settings on the shapes world (tiny measured, small untuned). The tiny recipe changes the family's model
(pre-LN): pretrain with the same flag, as above, for `config.init` to fit.
"""

from configs.finetune.common import finetune_config, finish
from vlfusion import configuration

PAPER = "visual entailment as UNITER (Chen et al., 2020) and ALBEF (Li et al., 2021) evaluate it on SNLI-VE"

SCHEDULES = {
    # vqa.py's tiny recipe over regions (the occluder is a region of its own): pre-LN, a wide
    # initializer range, no dropout, no clipping. With pairs.py's plain schedule (post-LN, BERT's 0.02
    # range, lr 1e-3, batch 32) the model answers one label for 2000 steps; docs/finetuning.md has the
    # measured run of this one.
    "tiny": {"data.name": "shapes_world_ve/tiny", "model.pre_norm": True, "model.initializer_range": 0.1,
             "model.dropout": 0.0, "optimizer.learning_rate": 2e-3, "optimizer.warmup_steps": 300,
             "optimizer.weight_decay": 0.01, "optimizer.schedule": "cosine", "optimizer.eps": 1e-8,
             "optimizer.grad_clip_norm": 0.0, "data.global_batch_size": 64, "train.num_steps": 3000},
    "small": {"data.name": "shapes_world_ve/small", "optimizer.learning_rate": 3e-4,
              "optimizer.warmup_steps": 500, "optimizer.schedule": "cosine",
              "data.global_batch_size": 64, "train.num_steps": 5000},
    "base": {"optimizer.learning_rate": 8e-5, "optimizer.lr_multipliers": "heads_ve:10",
             "optimizer.warmup_steps": 400, "optimizer.schedule": "linear",
             "data.global_batch_size": 256, "train.num_steps": 4000},
}


def get_config(arg=None):
  config, size, _ = finetune_config(arg, "ve")
  if size == "base":
    config.data.name = "snli_ve/regions" if config.model.image.input == "regions" else "snli_ve/images"
  configuration.override(config, SCHEDULES[size])
  return finish(config)
