r"""Two-stream co-attention fusion (LXMERT-style layer order) over shapes-world regions, MLM + ITM.

  python train.py --config=configs/pretrain/co_attention.py:tiny --workdir=/tmp/vlf_co
  python eval.py  --config=configs/pretrain/co_attention.py:tiny --workdir=/tmp/vlf_co

The argument picks a size: tiny (CPU, minutes), small, base. Ablate the fusion layer with e.g.
--config.model.cross.order=self_cross_ffn (METER) or --config.model.cross.direction=text_to_image.
"""

from vlfusion import configuration

PAPER = "generic co-attention, LXMERT layer order (Tan & Bansal, 2019)"


def get_config(arg=None):
  config, _ = configuration.sized_config(arg)
  config.model.fusion = "co_attention"
  config.model.cross.order = "cross_self_ffn"
  config.model.cross.direction = "both"
  config.model.cross.share_weights = False
  config.lock()
  return config
