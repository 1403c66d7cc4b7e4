"""BERT WordPiece tokenisation from a local vocab file (one token per line, id = line number)."""

from __future__ import annotations

import os

import numpy as np
from etils import epath
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

SHAPES_WORLD_VOCAB = os.path.join(os.path.dirname(__file__), "vocab", "shapes_world.txt")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer:
  """Encodes text as [CLS] wordpieces [SEP], as BERT does, from `vocab_path`.

  Works with the shapes-world vocab and with any BERT vocab.txt (e.g. the uncased 30522-token one).
  """

  def __init__(self, vocab_path: str = SHAPES_WORLD_VOCAB, lowercase: bool = True):
    if not epath.Path(vocab_path).is_file():  # a local path or a URI such as gs://...
      raise FileNotFoundError(f"tokenizer vocab file not found: {vocab_path}")
    with epath.Path(vocab_path).open(encoding="utf-8") as f:
      tokens = [line.rstrip("\n") for line in f]
    self.vocab = {t: i for i, t in enumerate(tokens) if t}
    missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
    if missing:
      raise ValueError(f"vocab file {vocab_path} lacks the special tokens {missing}")
    self.vocab_path = vocab_path
    self.vocab_size = len(tokens)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.vocab[t] for t in SPECIAL_TOKENS)
    self._tokenizer = Tokenizer(models.WordPiece(self.vocab, unk_token="[UNK]",
                                                 max_input_chars_per_word=100))
    self._tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    self._tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    self._id_to_token = {i: t for t, i in self.vocab.items()}

  def wordpieces(self, text: str) -> list[int]:
    """Ids of the wordpieces of `text`, without special tokens."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode(self, text: str, max_len: int | None = None) -> list[int]:
    """Ids of [CLS] text [SEP], truncated so that the whole fits in `max_len`."""
    ids = self.wordpieces(text)
    if max_len is not None:
      if max_len < 2:
        raise ValueError(f"max_len={max_len} leaves no room for [CLS] and [SEP]")
      ids = ids[: max_len - 2]
    return [self.cls_id, *ids, self.sep_id]

  def word_starts(self, ids) -> np.ndarray:
    """bool [L]: True where a token begins a word (every token except `##` continuations)."""
    return np.array([not self._id_to_token.get(int(i), "").startswith("##") for i in np.asarray(ids)])

  def decode(self, ids) -> str:
    """Tokens of `ids` joined back into words (padding dropped)."""
    words: list[str] = []
    for i in np.asarray(ids).tolist():
      token = self._id_to_token.get(int(i), "[UNK]")
      if token == "[PAD]":
        continue
      if token.startswith("##") and words:
        words[-1] += token[2:]
      else:
        words.append(token)
    return " ".join(words)
