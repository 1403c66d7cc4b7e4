r"""UNITER (Chen et al., 2020): one BERT stack over [text; regions], MLM + ITM + MRM (MRFR and MRC).

  python train.py --config=configs/pretrain/uniter.py:tiny --workdir=/tmp/vlf_uniter

Sizes: tiny (CPU, shapes world), small, base (published UNITER-base: 12 post-LN layers, 768 wide,
12 heads, FFN 3072, eps 1e-12, bert-base-cased vocab of 28996, 2048-d region features; masked region
feature regression and 1601-way region classification). base expects real data:
--config.data.name=coco_captions/regions --config.data.manual_dir=...
--config.data.vocab_path=<bert-base-cased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "UNITER (Chen et al., 2020)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "single_stream"
  m.heads = ("mlm", "itm", "mrm")
  m.fusion_layers = m.text.num_layers
  m.text.num_layers = 0
  m.image.num_layers = 0
  m.mrm.regression = True
  if size == "base":
    m.text.update(dict(vocab_size=28996, max_len=512))
    m.image.update(dict(feature_dim=2048, num_regions=36))
    m.mrm.num_labels = 1601
    config.data.name = "coco_captions/regions"
  else:
    m.mrm.num_labels = 15  # shapes world: colour x shape.
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=1.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
