r"""ALBEF (Li et al., 2021): a ViT image encoder, BERT text layers, and text layers that cross-attend into
the image (one-way fusion); ITC aligns the unimodal embeddings before fusion; MLM + ITM + ITC.

  python train.py --config=configs/pretrain/albef.py:tiny --workdir=/tmp/vlf_albef

Sizes: tiny (CPU, shapes-world 64 px images in 8 px patches through a convolutional stem), small,
base (published: ViT-B/16, 12 pre-LN layers, eps 1e-6, 256 px -> 257 tokens; BERT-base, layers 0-5
text only, layers 6-11 with cross-attention into the image between self-attention and FFN, post-LN
eps 1e-12; ITC on 256-d normalised [CLS] projections, temperature learned from 0.07 and clipped to
[0.001, 0.5]). ALBEF's momentum distillation and ITC-mined hard ITM negatives are not part of this
config. base expects real data: --config.data.name=coco_captions/images --config.data.manual_dir=...
--config.data.vocab_path=<bert-base-uncased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "ALBEF (Li et al., 2021)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "one_way"
  m.heads = ("mlm", "itm", "itc")
  m.pooler = "text"
  m.image.input = "patches"
  m.image.pre_norm = True  # ViT.
  m.image.layer_norm_eps = 1e-6
  m.itc.update(dict(temperature=0.07, min_temperature=0.001, max_temperature=0.5))
  if size == "base":
    m.text.update(dict(num_layers=6, vocab_size=30522, max_len=512))
    m.image.update(dict(num_layers=12, image_size=256, patch_size=16))
    m.fusion_layers = 6
    m.itc.embed_dim = 256
    config.data.name = "coco_captions/images"
  else:
    m.text.num_layers = max(1, m.text.num_layers // 2)
    m.image.update(dict(num_layers=m.text.num_layers * 2, image_size=64, patch_size=8))
    # From scratch on the shapes world: a convolutional stem and a wider init (docs/recipes.md) more
    # than double the retrieval of the scene captions (docs/finetuning.md, "Retrieval").
    m.image.stem = "conv"
    m.initializer_range = 0.1
    m.fusion_layers = m.text.num_layers
    m.itc.embed_dim = m.text.hidden_size // 2
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=1.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
