"""scan_layers: scanned stacks equal unrolled ones with the same (stacked) weights; names survive."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import co_attention, single_stream
from tests.model_fixtures import random_batch, random_params
from vlfusion import partitioning
from vlfusion.models import build_model
from vlfusion.models.stream import stack_params, unstack_params

STACKS = {  # config module -> (stack prefix, number of layers) in the encoder.
    single_stream: lambda m: [("layer", m.fusion_layers)],
    co_attention: lambda m: [("text_layer", m.text.num_layers), ("image_layer", m.image.num_layers),
                             ("fusion_layer", m.fusion_layers)],
}


def _config(module, scan, remat="none"):
  config = module.get_config("tiny")
  config.unlock()
  config.model.scan_layers = scan
  config.model.remat_policy = remat
  return config


@pytest.mark.parametrize("module", [single_stream, co_attention], ids=["single_stream", "co_attention"])
def test_scan_matches_unrolled(module):
  unrolled_config = _config(module, scan=False)
  batch = random_batch(unrolled_config, 2, 6, 4, (6, 3), (4, 2))
  unrolled = build_model(unrolled_config.model)
  params = random_params(unrolled, batch)
  expected = jax.jit(unrolled.apply)({"params": params}, batch)

  scanned = build_model(_config(module, scan=True).model)
  boxed = jax.eval_shape(scanned.init, jax.random.PRNGKey(0), batch)["params"]
  encoder = dict(params["encoder"])
  for prefix, n in STACKS[module](unrolled_config.model):
    encoder = stack_params(encoder, prefix, n)
    # Logical names survive the scan: a leading `layers` axis, then the layer's own names.
    kernel = boxed["encoder"][f"{prefix}_stack"]["layer"]
    specs = jax.tree.leaves(nn.get_partition_spec(kernel),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert specs and all(s[0] == "layers" for s in specs)
    expected_shapes = jax.tree.map(jnp.shape, encoder[f"{prefix}_stack"]["layer"])
    assert jax.tree.map(jnp.shape, nn.unbox(kernel)) == expected_shapes
  stacked = dict(params, encoder=encoder)
  got = jax.jit(scanned.apply)({"params": stacked}, batch)
  for key in ("text_hidden", "image_hidden", "pooled", "mlm_logits", "itm_logits"):
    np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=key)
  # And back: the round trip restores the unrolled layout exactly.
  back = dict(encoder)
  for prefix, n in STACKS[module](unrolled_config.model):
    back = unstack_params(back, prefix, n)
  assert jax.tree.structure(back) == jax.tree.structure(params["encoder"])


def test_layers_axis_maps_to_the_mesh():
  """The default rules map `layers` (so scanned params get shardings) and shard the layer's own axes."""
  config = _config(co_attention, scan=True)
  rules = partitioning.logical_rules(config.mesh)
  assert ("layers", None) in rules
  mesh = partitioning.make_mesh(config.mesh)
  spec = nn.logical_to_mesh_axes(("layers", "embed", "mlp"), rules)
  assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert mesh.shape["data"] == jax.device_count()
