r"""LXMERT (Tan & Bansal, 2019): language, object-relationship and cross-modality encoders, MLM + ITM + MRM.

  python train.py --config=configs/pretrain/lxmert.py:tiny --workdir=/tmp/vlf_lxmert

Sizes: tiny (CPU, shapes world), small, base (published: 9 language, 5 object, 5 cross layers, 768 wide,
12 heads, FFN 3072, post-LN eps 1e-12; each cross layer has ONE cross-attention module shared by both
directions, then self-attention and FFN per stream; tanh pooler on the language [CLS]). base expects
real data: --config.data.name=coco_captions/regions --config.data.manual_dir=...
--config.data.vocab_path=<bert-base-uncased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "LXMERT (Tan & Bansal, 2019)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "co_attention"
  m.cross.order = "cross_self_ffn"
  m.cross.direction = "both"
  m.cross.share_weights = True
  m.pooler = "text"
  m.heads = ("mlm", "itm", "mrm")
  if size == "base":
    m.text.update(dict(num_layers=9, vocab_size=30522, max_len=512))
    m.image.update(dict(num_layers=5, feature_dim=2048, num_regions=36))
    m.fusion_layers = 5
    m.mrm.num_labels = 1600  # Visual Genome object classes.
    config.data.name = "coco_captions/regions"
  else:
    m.mrm.num_labels = 15  # shapes world: colour x shape.
  m.mrm.regression = True  # LXMERT regresses the features and classifies the objects.
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=1.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
