r"""ViLT (Kim et al., 2021): pre-LN ViT blocks over [text; image patches], no region features, MLM + ITM.

  python train.py --config=configs/pretrain/vilt.py:tiny --workdir=/tmp/vlf_vilt

Sizes: tiny (CPU, shapes-world 64 px images in 8 px patches), small, base (published ViLT-B/32:
12 pre-LN layers, 768 wide, 12 heads, FFN 3072, final LayerNorm, 32 px patches of a 384 px image, text
of at most 40 tokens; LN eps 1e-12 as HF's converted config, the original ViT uses 1e-6). base expects
real data: --config.data.name=coco_captions/images --config.data.manual_dir=...
--config.data.vocab_path=<bert-base-uncased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "ViLT (Kim et al., 2021)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "single_stream"
  m.heads = ("mlm", "itm")
  m.pre_norm = True
  m.layer_norm_eps = 1e-12
  m.image.input = "patches"
  m.fusion_layers = m.text.num_layers
  m.text.num_layers = 0
  m.image.num_layers = 0
  if size == "base":
    m.text.update(dict(vocab_size=30522, max_len=40))
    m.image.update(dict(image_size=384, patch_size=32))
    config.data.name = "coco_captions/images"
  else:
    m.image.update(dict(image_size=64, patch_size=8))
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
