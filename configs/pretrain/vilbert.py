r"""ViLBERT (Lu et al., 2019): two streams of different widths joined by co-attention, MLM + ITM + MRM.

  python train.py --config=configs/pretrain/vilbert.py:tiny --workdir=/tmp/vlf_vilbert

Sizes: tiny (CPU, shapes world; text 64 / image 96 wide to keep the unequal widths), small, base (the
published `bert_base_6layer_6conect`: BERT-base text, 6 text layers before fusion, then 6 co-attention
layers each followed by a text and an image self-attention layer; image stream 1024 wide, 8 heads,
FFN 1024; co-attention 1024 wide, 8 heads; ReLU poolers multiplied). base describes the published
architecture and expects real data: --config.data.name=coco_captions/regions --config.data.manual_dir=...
--config.data.vocab_path=<bert-base-uncased vocab.txt>.
"""

from vlfusion import configuration

PAPER = "ViLBERT (Lu et al., 2019)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  m = config.model
  m.fusion = "co_attention"
  m.cross.order = "coattn_ffn_self"
  m.cross.direction = "both"
  m.cross.share_weights = False
  m.pooler = "product"
  m.heads = ("mlm", "itm", "mrm")
  if size == "base":
    m.text.update(dict(hidden_size=768, num_layers=6, num_heads=12, mlp_dim=3072, vocab_size=30522,
                       max_len=512))
    m.image.update(dict(hidden_size=1024, num_layers=0, num_heads=8, mlp_dim=1024, feature_dim=2048,
                        num_regions=36))
    m.cross.update(dict(hidden_size=1024, num_heads=8))
    m.fusion_layers = 6
    m.mrm.num_labels = 1601  # Visual Genome classes + background, as the detector's.
    config.data.name = "coco_captions/regions"
  else:
    # Half the text layers before fusion; the image stream wider than the text, as published.
    d = m.text.hidden_size
    m.image.update(dict(hidden_size=d * 3 // 2, num_layers=0, mlp_dim=d * 3 // 2))
    m.cross.update(dict(hidden_size=d * 3 // 2, num_heads=m.image.num_heads))
    m.text.num_layers = max(1, m.text.num_layers // 2)
    m.mrm.num_labels = 15  # shapes world: colour x shape.
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=1.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
