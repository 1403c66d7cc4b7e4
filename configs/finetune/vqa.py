r"""VQA fine-tuning of any pretraining family's model, or VQA from scratch with a tested recipe.

Fine-tune a pretrained workdir. Its family and size must match the argument, and its model the one this
config builds: the tiny and small recipes change the family's model (pixels through a conv stem, pre-LN;
`RECIPES`), so pretrain with the same model flags (`M`), or `config.init` refuses the checkpoint:

  M="--config.model.image.input=patches --config.model.image.image_size=64 \
     --config.model.image.patch_size=8 --config.model.image.stem=conv --config.model.pre_norm=True"
  python train.py --config=configs/pretrain/co_attention.py:tiny $M --workdir=W_pre
  python train.py --config=configs/finetune/vqa.py:tiny,family=co_attention \
      --config.init.checkpoint=W_pre --workdir=W_vqa
  python eval.py  --config=configs/finetune/vqa.py:tiny,family=co_attention --workdir=W_vqa

Without `config.init` the same command trains from scratch with the size's recipe (`RECIPES`):

  python train.py --config=configs/finetune/vqa.py:tiny --workdir=W_vqa_scratch

A question-type curriculum is one data flag: over regions, direction questions first, then direction
and relation, then all six types (docs/recipes.md: co_attention 0.95-0.97, relation 1.00, 5,000 steps):

  python train.py --config=configs/finetune/vqa.py:tiny --config.model.image.input=regions \
      --config.model.image.stem=linear --workdir=W_vqa_regions \
      "--config.data.question_type_weights=colour:0,shape:0,count:0,existence:0,relation:0; \
  2000=colour:0,shape:0,count:0,existence:0; 2500="

From an HF LXMERT / VisualBERT / ViLT directory (`from_huggingface` reads it; the model config must
describe the same architecture, e.g. `family=lxmert` at base size):

  python train.py --config=configs/finetune/vqa.py:base,family=lxmert \
      --config.init.huggingface=/path/to/lxmert-base-uncased --workdir=W_vqa

VQA v2 on disk (docs/data.md; the questions and annotations JSON of train2014/val2014 with the images,
or region features for `regions` models), with BERT's uncased vocab; the answer vocabulary is the train
answers given at least `data.vqa_min_answer_count` times and `model.vqa.num_answers=0` takes its size:

  python train.py --config=configs/finetune/vqa.py:base,family=vilt \
      --config.data.name=vqa_v2/images --config.data.manual_dir=/data/vqa_v2 \
      --config.data.vocab_path=/data/bert-base-uncased/vocab.txt \
      --config.init.huggingface=/path/to/vilt-b32-mlm --workdir=W_vqa_v2

(regions models: `--config.data.name=vqa_v2/regions`; pixel models take the family's
`model.image.image_size`, e.g. `--config.model.image.image_size=384`.)

The argument is `size[,family=<configs/pretrain file>]`, family co_attention by default. Base size uses
the published schedule (LXMERT/ViLT: lr 5e-5 for the encoder, 10x on the VQA head, linear decay, a few
epochs of VQA v2); tiny and small use `RECIPES`, the from-scratch recipes found by measurement
(docs/recipes.md). A recipe that changes the model (widths, norm placement, image stem) changes it for
fine-tuning too: pretrain with the same `--config.model.*` flags so the checkpoint fits (tests read the
commands above and check that every parameter but the new VQA head is restored).
"""

from configs.finetune.common import finetune_config, finish
from vlfusion import configuration

PAPER = "VQA fine-tuning as LXMERT (Tan & Bansal, 2019) and ViLT (Kim et al., 2021)"

# Per-size recipes, as dotted-path overrides applied after the family's model. tiny and small are the
# from-scratch recipes on the shapes world; base is the published fine-tuning schedule on VQA v2.
# Pixels as the shapes world's VQA recipes see them: 64 px images, a convolutional stem down to 8 px
# patches, positions started at 2-D sine-cosine (tiny: a small random table instead; docs/recipes.md has
# the search behind each value).
_PIXELS = {
    "model.image.input": "patches",
    "model.image.image_size": 64,
    "model.image.patch_size": 8,
    "model.image.stem": "conv",
    "model.image.position_init": "sincos",
}

RECIPES = {
    # 5000 steps of batch 64 over 40,000 scenes; pre-LN with a small random position table (the variant
    # whose shape questions leave chance): docs/recipes.md has each family's curve and wall time.
    "tiny": {
        **_PIXELS,
        "data.name": "shapes_world/tiny_40k",  # on tiny's 4,000 scenes the shape questions are memorised.
        "model.pre_norm": True,
        "model.image.position_init": "normal",
        "model.initializer_range": 0.1,  # ~1/sqrt(64); BERT's 0.02 stalls at the text prior.
        "model.dropout": 0.0,
        "optimizer.learning_rate": 2e-3,
        "optimizer.warmup_steps": 300,
        "optimizer.weight_decay": 0.01,
        "optimizer.schedule": "cosine",
        "optimizer.eps": 1e-8,
        "optimizer.grad_clip_norm": 0.0,  # clipping at 1.0 cut every early step ~40x.
        "data.global_batch_size": 64,
        "train.num_steps": 5000,
    },
    "small": {
        **_PIXELS,
        "model.initializer_range": 0.0625,  # 1/sqrt(256)
        "model.dropout": 0.0,
        "optimizer.learning_rate": 1e-3,
        "optimizer.warmup_steps": 200,
        "optimizer.weight_decay": 0.01,
        "optimizer.schedule": "cosine",
        "optimizer.eps": 1e-8,
        "optimizer.grad_clip_norm": 0.0,
        "data.global_batch_size": 32,
        "train.num_steps": 1500,
    },
    "base": {
        # ~4 epochs of VQA v2 train (443k questions) at batch 256.
        "optimizer.learning_rate": 5e-5,
        "optimizer.lr_multipliers": "heads_vqa:10",
        "optimizer.warmup_steps": 700,
        "optimizer.weight_decay": 0.01,
        "optimizer.schedule": "linear",
        "data.global_batch_size": 256,
        "train.num_steps": 7000,
    },
}


def get_config(arg=None):
  config, size, _ = finetune_config(arg, "vqa")
  if size == "base":
    config.data.name = "vqa_v2/regions" if config.model.image.input == "regions" else "vqa_v2/images"
  configuration.override(config, RECIPES[size])
  config.model.vqa.num_answers = 0  # the data's answer vocabulary (resolved before the model is built).
  return finish(config, eval_points=10)  # ten points of the validation curve.
