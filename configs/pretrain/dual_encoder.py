r"""Dual encoder (CLIP-like, Radford et al., 2021): text and image encoders with no cross-modal attention,
the late-fusion control; ITC on the [CLS] embeddings, and MLM + ITM through a product pooler.

  python train.py --config=configs/pretrain/dual_encoder.py:tiny --workdir=/tmp/vlf_dual

Sizes: tiny (CPU, shapes-world 64 px images in 8 px patches), small, base (CLIP ViT-B/16's sizes:
image 12 pre-LN layers, 768 wide, 12 heads, 224 px; text 12 pre-LN layers, 512 wide, 8 heads,
FFN 2048, 77 tokens, vocab 49408; eps 1e-5; 512-d ITC embeddings, temperature from 0.07). Unlike CLIP,
text attention is bidirectional and the text embedding is the [CLS] (first) token, not the end token.
The ITM head reads the product pooler (ReLU projections of both [CLS] multiplied), the only place the
two modalities meet besides ITC. base expects real data: --config.data.name=coco_captions/images
--config.data.manual_dir=... --config.data.vocab_path=<a WordPiece vocab>.
"""

from vlfusion import configuration

PAPER = "CLIP (Radford et al., 2021) as the control"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "dual_encoder"
  m.heads = ("mlm", "itm", "itc")
  m.pooler = "product"
  m.pre_norm = True
  m.layer_norm_eps = 1e-5
  m.fusion_layers = 0
  m.image.input = "patches"
  m.itc.update(dict(temperature=0.07, min_temperature=0.01, max_temperature=0.5))
  if size == "base":
    m.text.update(dict(hidden_size=512, num_layers=12, num_heads=8, mlp_dim=2048, vocab_size=49408,
                       max_len=77))
    m.image.update(dict(num_layers=12, image_size=224, patch_size=16))
    m.itc.embed_dim = 512
    config.data.name = "coco_captions/images"
  else:
    m.image.update(dict(num_layers=m.text.num_layers, image_size=64, patch_size=8))
    m.itc.embed_dim = m.text.hidden_size // 2
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=1.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
