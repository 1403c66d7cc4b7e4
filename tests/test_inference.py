"""`vlfusion.load` and predict.py: a trained tiny VQA workdir answers as eval.py's forward pass does, and a
converted HF LXMERT pretraining directory matches images and texts as HF's own ITM head does."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import vlfusion
from configs.finetune import vqa
from configs.pretrain import albef
from tests.conftest import FAST_XLA, tiny_config
from tests.finetune.checkpoints import save_random_checkpoint
from vlfusion import experiment, inference
from vlfusion.data import pipeline, questions, rows
from vlfusion.errors import ConfigError
from vlfusion.training.setup import Setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 5  # not a bucket size: the predictor pads to 8.


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """A co-attention VQA workdir over pixels, trained for 2 steps, and the eval rows' inputs."""
  workdir = str(tmp_path_factory.mktemp("inference") / "vqa")
  config = tiny_config(vqa, data_dir, **{
      "data.name": "shapes_world/tiny", "model.vqa.num_answers": len(questions.ANSWERS),
      "train.num_steps": 2, "train.checkpoint_every_steps": 2, "train.log_every_steps": 2,
      "eval.every_steps": 0, "data.global_batch_size": 8})
  experiment.train_and_evaluate(config, workdir)
  source = pipeline.make_batch_source(config, config.data.eval_split)
  examples = [source.eval_example(i, keep_text=True) for i in range(8)]
  pixels = [np.asarray(source.data_source[i]["image"]) for i in range(ROWS)]
  return workdir, examples, pixels


def _eval_logits(workdir, examples):
  """The VQA logits of eval.py's path: the saved config, its Setup and Predictor, the restored params."""
  config = experiment.saved_config(workdir)
  setup = Setup(config)
  params, _ = experiment.restore_params(workdir, setup)
  predictor = experiment.predictor(setup)
  batch = pipeline.collate([{k: v for k, v in ex.items() if k not in rows.HOST_KEYS} for ex in examples])
  with predictor.placed():
    outputs = predictor.jit(predictor.predict_fn)(params, predictor.global_batch(batch))
  return np.asarray(jax.device_get(outputs["vqa_logits"]))


def test_vqa_answers_are_the_evaluators_arg_max(trained, tmp_path):
  workdir, examples, pixels = trained
  logits = _eval_logits(workdir, examples)[:ROWS]
  model = vlfusion.load(workdir)
  assert model.step == 2 and model.answers == list(questions.ANSWERS)
  texts = [ex["text"] for ex in examples[:ROWS]]
  got = model.vqa(pixels, texts, top_k=3)
  assert [row[0][0] for row in got] == [questions.ANSWERS[int(i)] for i in logits.argmax(-1)]
  np.testing.assert_allclose([row[0][1] for row in got], 1 / (1 + np.exp(-logits.max(-1))), atol=1e-5)
  assert all(len(row) == 3 and row[0][1] >= row[1][1] >= row[2][1] for row in got)

  # The same images as PNG files and as PIL images; one row alone (bucket 1) as in a batch of 5 (bucket 8).
  paths = []
  for i, p in enumerate(pixels):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(p).save(paths[-1])
  assert model.vqa(paths, texts, top_k=3) == got
  alone = model.vqa([Image.fromarray(pixels[3])], [texts[3]], top_k=3)[0]
  assert [a for a, _ in alone] == [a for a, _ in got[3]]
  np.testing.assert_allclose([s for _, s in alone], [s for _, s in got[3]], atol=1e-5)

  # The attention maps of analysis.attention_maps: each text token's weights over the image sum to 1.
  attention = model.attention(paths[0], texts[0])
  assert attention.tokens[0] == "[CLS]" and attention.tokens[-1] == "[SEP]"
  assert sorted(attention.maps) == ["encoder/fusion_layer_0/text_cross/attention",
                                    "encoder/fusion_layer_1/text_cross/attention"]
  for weights, share in attention.maps.values():
    assert weights.shape == (len(attention.tokens), 1 + (64 // 8) ** 2)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(share, 1.0)

  with pytest.raises(ConfigError, match=r"config.model.heads=\('vqa',\)"):
    model.similarity(paths[:1], texts[:1])
  with pytest.raises(ValueError, match="5 images but 2 questions"):
    model.vqa(paths, texts[:2])

  # predict.py prints the same answers.
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}")
  run = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), f"--workdir={workdir}",
                        f"--image={paths[0]}", f"--image={paths[1]}", f"--question={texts[0]}",
                        f"--question={texts[1]}", "--top_k=2"],
                       env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  printed = json.loads(run.stdout)
  assert printed["step"] == 2 and printed["task"] == "vqa"
  assert [(r["image"], r["text"]) for r in printed["results"]] == list(zip(paths[:2], texts[:2], strict=True))
  answers = [[a for a, _ in r["answers"]] for r in printed["results"]]
  assert answers == [[a for a, _ in w[:2]] for w in got[:2]]
  np.testing.assert_allclose([s for r in printed["results"] for _, s in r["answers"]],
                             [s for w in got[:2] for _, s in w[:2]], atol=1e-5)


def test_similarity_is_the_cosine_of_the_separate_embeddings(data_dir, tmp_path):
  """ALBEF's ITC embeddings are unimodal: embedding images and texts apart (each beside a blank partner)
  gives the vectors whose cosine `similarity` reports from the pairs."""
  workdir = str(tmp_path / "albef")
  save_random_checkpoint(workdir, tiny_config(albef, data_dir, **{"data.name": "shapes_world/tiny"}))
  model = vlfusion.load(workdir)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (64, 64, 3)).astype(np.uint8) for _ in range(3)]
  texts = ["a red circle", "two blue squares left of a circle", "is there a triangle"]
  v, t = model.embed_images(images), model.embed_texts(texts)
  assert v.shape == t.shape == (3, model.config.model.itc.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(model.similarity(images, texts), np.sum(v * t, -1), atol=1e-5)
  assert np.ptp(np.sum(v * t, -1)) > 1e-3
  assert model.match(images[:1], texts)[0] != model.match(images[1:2], texts[:1])[0]


MATCH_TOL = 1e-5  # float32 on CPU; measured ~1e-7.


SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48)


def _lxmert(transformers, vocab_size):
  cfg = transformers.LxmertConfig(vocab_size=vocab_size, l_layers=2, r_layers=1, x_layers=1,
                                  visual_feat_dim=24, visual_pos_dim=4, num_object_labels=5,
                                  num_attr_labels=5, num_qa_labels=3, **SMALL)
  # HF's ITM: cross_relationship_score, label 1 = the sentence matches the image.
  run = lambda hf, ids, region: hf(
      input_ids=ids, attention_mask=ids * 0 + 1, visual_feats=region["features"][None],
      visual_pos=region["boxes"][None]).cross_relationship_score.softmax(-1)[0, 1]
  return transformers.LxmertForPreTraining(cfg), run


def _visual_bert(transformers, vocab_size):
  cfg = transformers.VisualBertConfig(vocab_size=vocab_size, num_hidden_layers=2, visual_embedding_dim=24,
                                      **SMALL)
  # HF's ITM: seq_relationship_logits, label 0 = the sentence matches the image.
  run = lambda hf, ids, region: hf(
      input_ids=ids, attention_mask=ids * 0 + 1, visual_embeds=region["features"][None]
      ).seq_relationship_logits.softmax(-1)[0, 0]
  return transformers.VisualBertForPreTraining(cfg), run


@pytest.mark.parametrize("make", [_lxmert, _visual_bert], ids=["lxmert", "visual_bert"])
def test_match_on_a_converted_pretraining_directory_is_hfs_itm_probability(tmp_path, make):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  words = ["a", "red", "blue", "circle", "square", "left", "of", "the", "is", "there"]
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  hf, hf_match = make(transformers, len(vocab))
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():  # far from HF's near-zero init, so that every weight matters.
    for p in hf.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  hf.eval().save_pretrained(tmp_path, safe_serialization=True)

  model = vlfusion.load(str(tmp_path))
  assert model.heads == ("itm",) and model.step is None
  rng = np.random.default_rng(0)
  regions = [{"features": rng.normal(size=(n, 24)).astype(np.float32),
              "boxes": rng.uniform(size=(n, 4)).astype(np.float32)} for n in (5, 3, 4)]
  texts = ["a red circle left of the blue square", "is there a square", "blue"]
  got = np.asarray(model.match(regions, texts))

  diffs = []
  for i, (region, text) in enumerate(zip(regions, texts, strict=True)):  # HF, one unpadded row at a time.
    ids = torch.tensor([model.tokenizer.encode(text)], dtype=torch.long)
    with torch.no_grad():
      want = hf_match(hf, ids, {k: torch.tensor(v) for k, v in region.items()}).item()
    diffs.append(abs(got[i] - want))
  print(f"{make.__name__[1:]} ITM probability: max abs diff from HF {max(diffs):.1e}")
  assert max(diffs) < MATCH_TOL
  assert np.ptp(got) > 10 * MATCH_TOL  # the rows differ: the comparison is not of a constant.

  # predict.py's record, the regions read from .npz files.
  paths = []
  for i, region in enumerate(regions):
    paths.append(str(tmp_path / f"regions_{i}.npz"))
    np.savez(paths[-1], **region)
  record = inference.predict_record(model, "match", paths, texts)
  assert record["step"] is None and record["source"] == str(tmp_path)
  np.testing.assert_allclose([r["match"] for r in record["results"]], got, atol=1e-6)

  with pytest.raises(ValueError, match="config.model.image.input='regions'"):
    model.match([np.zeros((8, 8, 3), np.uint8)], ["a red circle"])


def test_a_converted_vilt_directory_normalises_pixels_as_hf_and_has_no_itm_head(tmp_path):
  transformers = pytest.importorskip("transformers")
  cfg = transformers.ViltConfig(num_hidden_layers=1, image_size=32, patch_size=8, max_position_embeddings=16,
                                vocab_size=20, **SMALL)
  transformers.ViltModel(cfg).save_pretrained(tmp_path, safe_serialization=True)
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(
      {"do_normalize": True, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.5]}))
  model = vlfusion.load(str(tmp_path))
  pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
  got = model.preprocess_image(pixels)["image"]
  np.testing.assert_allclose(got, (pixels / 255.0 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5], atol=1e-5)
  with pytest.raises(ConfigError, match=r"match\(\) needs the 'itm' head, but config.model.heads=\(\)"):
    model.match([pixels], ["a"])


def test_load_names_what_it_cannot_read(tmp_path):
  with pytest.raises(ConfigError, match="neither a vlfusion run"):
    inference.load(str(tmp_path))
  assert not inference.is_huggingface_dir(tmp_path)
