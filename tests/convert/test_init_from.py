"""model.text.init_from / model.image.init_from: streams start from BERT and ViT/CLIP checkpoints."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from configs.pretrain import co_attention, single_stream
from vlfusion.configuration import ConfigError
from vlfusion.convert import hf_files, init_from
from vlfusion.models import build_model

transformers = pytest.importorskip("transformers")

WIDTHS = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48)


def _save(model, path):
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  model.eval().save_pretrained(path, safe_serialization=True)
  return str(path), model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  cfg = transformers.BertConfig(num_hidden_layers=2, vocab_size=60, max_position_embeddings=64, **WIDTHS)
  return _save(transformers.BertModel(cfg), tmp_path_factory.mktemp("bert"))


def _config(module, **model):
  config = module.get_config("tiny")
  config.unlock()
  m = config.model
  for stream in (m.text, m.image):
    stream.update(hidden_size=32, num_heads=4, mlp_dim=48)
  m.text.vocab_size = 60
  for key, value in model.items():
    node, *rest = key.split(".")
    if rest:
      m[node][rest[0]] = value
    else:
      m[key] = value
  return config


def _batch(config, valid_text=(6, 3)):
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 60, (2, 6)).astype(np.int32)
  batch = {"text_ids": ids, "text_mask": np.arange(6)[None] < np.asarray(valid_text)[:, None]}
  s = config.model.image.image_size
  if config.model.image.input == "patches":
    batch["image"] = rng.normal(size=(2, s, s, 3)).astype(np.float32)
  else:
    f = config.model.image.feature_dim
    batch["regions"] = {"features": rng.normal(size=(2, 3, f)).astype(np.float32),
                        "boxes": rng.uniform(size=(2, 3, 4)).astype(np.float32),
                        "mask": np.ones((2, 3), bool)}
  return batch


def _init(config, batch):
  """The model and random parameters boxed with their logical names, as `model.init` returns them.

  Drawn with numpy over `eval_shape`: compiling the real init costs tens of seconds on a busy CPU.
  """
  model = build_model(config.model)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.02, s.dtype), abstract)
  return model, params


def test_text_stream_from_bert_reproduces_bert(bert_dir):
  """co_attention with no fusion layers: after init_from, the text stream computes BertModel."""
  path, hf = bert_dir
  config = _config(co_attention, **{"text.init_from": path, "text.num_layers": 2, "fusion_layers": 0,
                                    "image.num_layers": 1})
  batch = _batch(config)
  model, boxed = _init(config, batch)
  params, report = init_from.apply(config, boxed)
  assert isinstance(params["encoder"]["text_layer_0"]["mlp"]["norm"]["scale"], nn.Partitioned)
  loaded = report.loaded["model.text.init_from"]
  assert "text_embeddings/word_embeddings/embedding" in loaded and "pooler/dense/kernel" in loaded
  assert not any(n.startswith("encoder/image_layer") for n in loaded)
  assert "encoder/image_layer_0/self_attention/attention/query/kernel" in report.fresh
  assert any("cut from 64 to model.text.max_len=40" in n for n in report.notes)
  # Untouched parameters keep their initial values.
  before, after = traverse_util.flatten_dict(nn.unbox(boxed)), traverse_util.flatten_dict(nn.unbox(params))
  np.testing.assert_array_equal(before[("encoder", "image_layer_0", "mlp", "norm", "bias")],
                                after[("encoder", "image_layer_0", "mlp", "norm", "bias")])
  out = jax.jit(model.apply)({"params": nn.unbox(params)}, batch)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(batch["text_ids"], dtype=torch.long),
             attention_mask=torch.tensor(batch["text_mask"]).long())
  for row, n in enumerate((6, 3)):
    np.testing.assert_allclose(out["text_hidden"][row, :n], ref.last_hidden_state[row, :n].numpy(),
                               atol=1e-4)
  np.testing.assert_allclose(out["pooled"], ref.pooler_output.numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_image_stream_from_vit_or_clip(tmp_path, bert_dir, kind):
  """single_stream with pre-LN (ViLT-like): ViT/CLIP give the patch embedding and the joint layers."""
  if kind == "vit":
    cfg = transformers.ViTConfig(num_hidden_layers=2, image_size=32, patch_size=8, **WIDTHS)
    path, vit = _save(transformers.ViTModel(cfg), tmp_path / "vit")
    # transformers 5 names ViT's modules unlike the files it saves; both read alike.
    from_object, from_dir = hf_files.load(vit).tensors, hf_files.load(path).tensors
    assert sorted(from_object) == sorted(from_dir)
    np.testing.assert_array_equal(from_object["encoder.layer.1.output.dense.weight"],
                                  from_dir["encoder.layer.1.output.dense.weight"])
  else:
    cfg = transformers.CLIPVisionConfig(num_hidden_layers=2, image_size=32, patch_size=8, **WIDTHS)
    path, _ = _save(transformers.CLIPVisionModel(cfg), tmp_path / "clip")
  config = _config(single_stream, **{"image.input": "patches", "image.image_size": 16,
                                     "image.patch_size": 8, "image.init_from": path,
                                     "text.init_from": bert_dir[0], "pre_norm": True})
  batch = _batch(config)
  model, boxed = _init(config, batch)
  params, report = init_from.apply(config, nn.unbox(boxed))
  loaded = report.loaded["model.image.init_from"]
  assert "image_embeddings/patch_proj/kernel" in loaded
  assert "encoder/layer_1/mlp/mlp/output/kernel" in loaded
  assert ("encoder/final_norm/scale" in loaded) == (kind == "vit")
  # The joint stack is pre-LN, so BERT gives only the text embeddings (and the pooler).
  assert not any(n.startswith("encoder/") for n in report.loaded["model.text.init_from"])
  assert any("resized from a 4x4 to a 2x2" in n for n in report.notes)
  if kind == "clip":
    assert "pre_layrnorm.weight" in report.unused["model.image.init_from"]
    assert any("quick_gelu" in n for n in report.notes)
  from safetensors.numpy import load_file
  tensors = load_file(f"{path}/model.safetensors")
  suffix = "patch_embeddings.projection.weight" if kind == "vit" else "patch_embedding.weight"
  (conv,) = [v for k, v in tensors.items() if k.endswith(f"embeddings.{suffix}")]
  np.testing.assert_array_equal(params["image_embeddings"]["patch_proj"]["kernel"],
                                conv.transpose(2, 3, 1, 0))
  out = jax.jit(model.apply)({"params": params}, batch)
  assert np.all(np.isfinite(out["pooled"]))


def test_errors_name_the_field_and_the_file(tmp_path, bert_dir):
  config = _config(co_attention, **{"text.init_from": str(tmp_path / "missing")})
  batch = _batch(config)
  _, params = _init(config, batch)
  with pytest.raises(ConfigError, match=r"config\.model\.text\.init_from=.*missing.*no such directory"):
    init_from.apply(config, params)
  config.model.text.init_from = bert_dir[0]
  config.model.text.mlp_dim = 64
  with pytest.raises(ConfigError, match=r"config\.model\.text\.init_from=.*config\.json intermediate_size "
                     r"has 48, but config\.model\.text\.mlp_dim=64"):
    init_from.apply(config, params)
  config.model.text.update(mlp_dim=48, init_from="")
  config.model.image.init_from = bert_dir[0]
  with pytest.raises(ConfigError, match=r"config\.model\.image\.init_from=.*image\.input='regions'"):
    init_from.apply(config, params)


def test_bfloat16_checkpoints_are_read_as_float32(tmp_path):
  cfg = transformers.BertConfig(num_hidden_layers=1, vocab_size=60, max_position_embeddings=16, **WIDTHS)
  hf = transformers.BertModel(cfg).to(torch.bfloat16)
  hf.save_pretrained(tmp_path, safe_serialization=True)
  ck = hf_files.load_directory(str(tmp_path))
  table = ck.tensors["embeddings.word_embeddings.weight"]
  assert table.dtype == np.float32
  np.testing.assert_array_equal(table, hf.embeddings.word_embeddings.weight.float().detach().numpy())
  assert "embeddings.position_ids" not in ck.tensors  # integer buffers are not weights.


def test_sharded_parameters_keep_their_sharding(bert_dir):
  config = _config(co_attention, **{"text.init_from": bert_dir[0]})
  _, boxed = _init(config, _batch(config))
  params = nn.unbox(boxed)
  mesh = jax.make_mesh((len(jax.devices()),), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "fsdp"))
  table = params["text_embeddings"]["word_embeddings"]["embedding"]
  params["text_embeddings"]["word_embeddings"]["embedding"] = jax.device_put(table, sharding)
  loaded, _ = init_from.apply(config, params)
  new = loaded["text_embeddings"]["word_embeddings"]["embedding"]
  assert new.sharding == sharding
  np.testing.assert_array_equal(new, bert_dir[1].embeddings.word_embeddings.weight.detach().numpy())


def test_training_starts_from_the_checkpoint(bert_dir, caplog):
  """The trainer's initial state carries the BERT weights named by model.text.init_from."""
  from vlfusion.training import trainer

  config = _config(co_attention, **{"text.init_from": bert_dir[0]})
  with caplog.at_level("INFO"):
    state = trainer.Setup(config).initial_state()
  hf = bert_dir[1]
  np.testing.assert_array_equal(np.asarray(state.params["text_embeddings"]["word_embeddings"]["embedding"]),
                                hf.embeddings.word_embeddings.weight.detach().numpy())
  assert "model.text.init_from: loaded" in caplog.text
  # the image stream was not in the checkpoint and keeps its fresh initialisation.
  assert "freshly initialised" in caplog.text


def test_init_from_with_scanned_layers_is_refused(bert_dir):
  from vlfusion.configuration import validate

  config = _config(co_attention, **{"text.init_from": bert_dir[0], "scan_layers": True})
  with pytest.raises(ConfigError, match="config.model.text.init_from.*scan_layers"):
    validate(config)
