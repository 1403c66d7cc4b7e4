"""HF tensor layouts -> vlfusion parameter layouts, block by block.

Each function reads HF tensors under a name prefix and returns {vlfusion param path (tuple): array}, to be
placed under the module the caller names. torch Linear weights are [out, in]; vlfusion kernels are
[in, out], with attention kernels at full rank ([D, H, Dh] in, [H, Dh, D] out: DESIGN.md section 3).
"""

from __future__ import annotations

import numpy as np

from vlfusion.convert.hf_files import HfCheckpoint

Params = dict[tuple[str, ...], np.ndarray]


def prefixed(prefix: tuple[str, ...], params: Params) -> Params:
  return {prefix + k: v for k, v in params.items()}


def dense(ck: HfCheckpoint, name: str) -> Params:
  """torch Linear `name` -> Dense {kernel [in,out], bias [out]}."""
  return {("kernel",): ck.get(f"{name}.weight").T, ("bias",): ck.get(f"{name}.bias")}


def layer_norm(ck: HfCheckpoint, name: str) -> Params:
  return {("scale",): ck.get(f"{name}.weight"), ("bias",): ck.get(f"{name}.bias")}


def embed(table: np.ndarray) -> Params:
  return {("embedding",): table}


def attention(ck: HfCheckpoint, q: str, k: str, v: str, out: str, num_heads: int) -> Params:
  """Query/key/value/output Linears -> `MultiHeadAttention` params ([D,H,Dh] and [H,Dh,D] kernels)."""
  params: Params = {}
  for ours, theirs in (("query", q), ("key", k), ("value", v)):
    w, b = ck.get(f"{theirs}.weight"), ck.get(f"{theirs}.bias")
    width = w.shape[0]
    params[(ours, "kernel")] = w.T.reshape(w.shape[1], num_heads, width // num_heads)
    params[(ours, "bias")] = b.reshape(num_heads, width // num_heads)
  w = ck.get(f"{out}.weight")
  params[("out", "kernel")] = w.T.reshape(num_heads, w.shape[1] // num_heads, w.shape[0])
  params[("out", "bias")] = ck.get(f"{out}.bias")
  return params


def attention_sublayer(ck: HfCheckpoint, q: str, k: str, v: str, out: str, norm: str,
                       num_heads: int) -> Params:
  """An attention `Residual` (its LayerNorm plus the attention)."""
  return {
      **prefixed(("norm",), layer_norm(ck, norm)),
      **prefixed(("attention",), attention(ck, q, k, v, out, num_heads)),
  }


def mlp_sublayer(ck: HfCheckpoint, fc1: str, fc2: str, norm: str) -> Params:
  """An MLP `Residual` (its LayerNorm plus Dense(mlp_dim) -> GELU -> Dense(D))."""
  return {
      **prefixed(("norm",), layer_norm(ck, norm)),
      **prefixed(("mlp", "intermediate"), dense(ck, fc1)),
      **prefixed(("mlp", "output"), dense(ck, fc2)),
  }


def bert_attention(ck: HfCheckpoint, p: str, num_heads: int, self_name: str = "self") -> Params:
  """BERT-style `{p}.{self_name}.{query,key,value}` + `{p}.output.{dense,LayerNorm}` (post-LN)."""
  return attention_sublayer(ck, f"{p}.{self_name}.query", f"{p}.{self_name}.key",
                            f"{p}.{self_name}.value", f"{p}.output.dense", f"{p}.output.LayerNorm",
                            num_heads)


def bert_layer(ck: HfCheckpoint, p: str, num_heads: int) -> Params:
  """A BERT (also LXMERT language/object, VisualBERT) layer `p` -> a post-LN `TransformerLayer`."""
  return {
      **prefixed(("self_attention",), bert_attention(ck, f"{p}.attention", num_heads)),
      **prefixed(("mlp",), mlp_sublayer(ck, f"{p}.intermediate.dense", f"{p}.output.dense",
                                        f"{p}.output.LayerNorm")),
  }


def vit_layer(ck: HfCheckpoint, p: str, num_heads: int) -> Params:
  """A ViT/ViLT pre-LN layer `p` (layernorm_before/after) -> a pre-LN `TransformerLayer`."""
  a = f"{p}.attention"
  return {
      **prefixed(("self_attention",), attention_sublayer(
          ck, f"{a}.attention.query", f"{a}.attention.key", f"{a}.attention.value", f"{a}.output.dense",
          f"{p}.layernorm_before", num_heads)),
      **prefixed(("mlp",), mlp_sublayer(ck, f"{p}.intermediate.dense", f"{p}.output.dense",
                                        f"{p}.layernorm_after")),
  }


def clip_layer(ck: HfCheckpoint, p: str, num_heads: int) -> Params:
  """A CLIP vision layer `p` (layer_norm1/2, q/k/v/out_proj, fc1/fc2) -> a pre-LN `TransformerLayer`."""
  s = f"{p}.self_attn"
  return {
      **prefixed(("self_attention",), attention_sublayer(
          ck, f"{s}.q_proj", f"{s}.k_proj", f"{s}.v_proj", f"{s}.out_proj", f"{p}.layer_norm1",
          num_heads)),
      **prefixed(("mlp",), mlp_sublayer(ck, f"{p}.mlp.fc1", f"{p}.mlp.fc2", f"{p}.layer_norm2")),
  }


def bert_text_embeddings(ck: HfCheckpoint, p: str = "embeddings") -> Params:
  """BERT word/position/token-type tables and LayerNorm -> `TextEmbeddings` params."""
  return {
      **prefixed(("word_embeddings",), embed(ck.get(f"{p}.word_embeddings.weight"))),
      **prefixed(("position_embeddings",), embed(ck.get(f"{p}.position_embeddings.weight"))),
      **prefixed(("token_type_embeddings",), embed(ck.get(f"{p}.token_type_embeddings.weight"))),
      **prefixed(("norm",), layer_norm(ck, f"{p}.LayerNorm")),
  }


def conv(weight: np.ndarray, bias: np.ndarray | None) -> Params:
  """torch Conv2d weight [D,C,p,p] -> flax Conv kernel [p,p,C,D] (+ bias, zeros when it has none)."""
  if bias is None:
    bias = np.zeros(weight.shape[0], weight.dtype)
  return {("kernel",): weight.transpose(2, 3, 1, 0), ("bias",): bias}
