r"""Single-stream fusion (VisualBERT/UNITER-style) over shapes-world regions, with MLM + ITM.

  python train.py --config=configs/pretrain/single_stream.py:tiny --workdir=/tmp/vlf_single
  python eval.py  --config=configs/pretrain/single_stream.py:tiny --workdir=/tmp/vlf_single

The argument picks a size: tiny (CPU, minutes), small, base (BERT-base widths).
"""

from vlfusion import configuration

PAPER = "generic single stream, VisualBERT/UNITER-style"


def get_config(arg=None):
  config, _ = configuration.sized_config(arg)
  config.model.fusion = "single_stream"
  # One joint stack: its depth is fusion_layers; there are no unimodal layers.
  config.model.fusion_layers = config.model.text.num_layers
  config.model.text.num_layers = 0
  config.model.image.num_layers = 0
  config.lock()
  return config
