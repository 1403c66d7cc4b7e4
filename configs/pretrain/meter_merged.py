r"""METER merged attention (Dou et al., 2022): the METER encoders, then one stack over [text; image].

  python train.py --config=configs/pretrain/meter_merged.py:tiny --workdir=/tmp/vlf_meter_merged

Sizes as configs/pretrain/meter_co.py (base: RoBERTa-base + CLIP-ViT-B/16). The paper describes merged
attention without released code; here the fusion is 6 post-LN BERT layers over the concatenation with
modality-type embeddings (the co-attention model's 6 layers; a merged layer has about half the weights
of a co-attention layer pair), and tanh poolers on both [CLS] tokens, concatenated.
"""

from configs.pretrain.meter_co import apply_meter_encoders
from vlfusion import configuration

PAPER = "METER, merged attention (Dou et al., 2022)"


def get_config(arg=None):
  config, size = configuration.sized_config(arg)
  config.model.fusion = "merged_attention"
  config.model.heads = ("mlm", "itm")
  apply_meter_encoders(config, size)
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.lock()
  return config
