"""Weight import from HF transformers checkpoints (safetensors only, never pickles).

`from_huggingface(model_or_dir)` converts a BertModel, LxmertModel, VisualBertModel or ViltModel into a
vlfusion `(model_config, params)`; `init_from.apply(config, params)` initialises the text stream from a BERT
checkpoint and the image stream from a ViT or CLIP vision checkpoint (`model.{text,image}.init_from`).
"""

from vlfusion.convert.hf_files import CheckpointError
from vlfusion.convert.huggingface import from_huggingface

__all__ = ["CheckpointError", "from_huggingface"]
