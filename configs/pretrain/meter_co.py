r"""METER co-attention (Dou et al., 2022): RoBERTa text and CLIP-ViT image encoders joined by co-attention.

  python train.py --config=configs/pretrain/meter_co.py:tiny --workdir=/tmp/vlf_meter_co

Sizes: tiny (CPU, shapes-world 64 px images in 8 px patches), small, base (published: RoBERTa-base text,
12 post-LN layers, eps 1e-5; CLIP-ViT-B/16 image, 12 pre-LN layers, eps 1e-5, 224 px; then 6 co-attention
layers per stream, self -> cross (into the other stream's previous states) -> FFN, 768 wide, post-LN;
tanh poolers on both [CLS] tokens, concatenated). CLIP's QuickGELU is replaced by the exact GELU and
the linear projections of each encoder to 768 are omitted (both are 768 wide already). base expects
real data: --config.data.name=coco_captions/images --config.data.manual_dir=...
--config.data.vocab_path=<a WordPiece vocab of 50265 entries or fewer>.
"""

from vlfusion import configuration

PAPER = "METER, co-attention (Dou et al., 2022)"


def apply_meter_encoders(config, size):
  """The unimodal encoders METER uses (RoBERTa text, pre-LN CLIP-ViT image), by size."""
  m = config.model
  m.image.input = "patches"
  m.text.layer_norm_eps = 1e-5  # RoBERTa.
  m.image.pre_norm = True  # CLIP ViT.
  m.image.layer_norm_eps = 1e-5
  m.pooler = "concat"
  if size == "base":
    m.text.update(dict(num_layers=12, vocab_size=50265, max_len=514, type_vocab_size=1))
    m.image.update(dict(num_layers=12, image_size=224, patch_size=16))
    m.fusion_layers = 6
    config.data.name = "coco_captions/images"
  else:
    m.image.update(dict(num_layers=m.text.num_layers, image_size=64, patch_size=8))


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "co_attention"
  m.cross.order = "self_cross_ffn"
  m.cross.direction = "both"
  m.cross.share_weights = False
  m.heads = ("mlm", "itm")
  apply_meter_encoders(config, size)
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
