r"""VisualBERT (Li et al., 2019): one BERT stack over [text; regions], MLM + ITM.

  python train.py --config=configs/pretrain/visualbert.py:tiny --workdir=/tmp/vlf_visualbert

Sizes: tiny (CPU, shapes world), small, base (published: 12 BERT-base post-LN layers, 768 wide, 12 heads,
eps 1e-12, 2048-d COCO region features, tanh pooler on [CLS]). VisualBERT's sentence-image prediction is
the ITM objective here. base expects real data: --config.data.name=coco_captions/regions
--config.data.manual_dir=... --config.data.vocab_path=<bert-base-uncased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "VisualBERT (Li et al., 2019)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "single_stream"
  m.heads = ("mlm", "itm")
  m.fusion_layers = m.text.num_layers  # the joint stack; no unimodal layers.
  m.text.num_layers = 0
  m.image.num_layers = 0
  m.image.embedding = "visualbert"  # fc(features) + visual type + position, LayerNorm; no boxes.
  if size == "base":
    m.text.update(dict(vocab_size=30522, max_len=512))
    m.image.update(dict(feature_dim=2048, num_regions=36))
    config.data.name = "coco_captions/regions"
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
