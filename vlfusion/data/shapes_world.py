"""The shapes world as a tensorflow-datasets builder (`shapes_world/<size>`), written as ArrayRecord.

Example i of split s is `scene_examples.make_example(default_rng([SEED, s, i]), style=STYLES[s])`: the
same on every machine and every run, so a dataset prepared twice is the same dataset. Example i is also
the left image of a pair whose right image is example `pair_index(s, i)`, with an NLVR2-style statement
about both.

From 7.0.0 scenes are drawn by `rendering` in a style per split: train, validation and test in
"varied", and `validation_style` (validation's scenes and questions, key for key) in "textured", a style
no training scene has. Older versions stay reproducible: `tfds.builder("shapes_world/tiny:6.0.0")`
(`SUPPORTED_VERSIONS`) writes what 6.0.0 wrote, byte for byte, with the flat renderer and no
`validation_style`. The builder's version reaches `_generate_examples` as `self.version`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vlfusion.data import questions, rendering, scene_examples, scenes

SEED = 20261124
# validation_style has validation's key: the same scenes, drawn in another style.
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2, "validation_style": 1}
FIRST_STYLED = tfds.core.Version("7.0.0")
STYLES = {"train": "varied", "validation": "varied", "test": "varied", "validation_style": "textured"}


@dataclasses.dataclass
class ShapesWorldConfig(tfds.core.BuilderConfig):
  image_size: int = 64
  max_objects: int = 4
  num_examples: dict[str, int] = dataclasses.field(default_factory=dict)


class ShapesWorld(tfds.core.GeneratorBasedBuilder):
  """Procedurally rendered scenes of coloured shapes: captions, ITM negatives, VQA and scene pairs."""

  VERSION = tfds.core.Version("7.0.0")
  SUPPORTED_VERSIONS = [tfds.core.Version("6.0.0")]
  RELEASE_NOTES = {
      "1.0.0": "Scenes, region features, captions, random and hard negatives.",
      "2.0.0": "Object labels, VQA questions (5 types, closed answer vocab), NLVR2-style scene pairs.",
      "3.0.0": "A scene caption (every object with its place; caption kind \"scene\") and its negative; "
               "pair statements balanced per template (their wording alone predicted 74% of labels).",
      "4.0.0": "A sixth VQA question type, \"direction\" (where is X relative to Y? -> left/right/above/"
               "below; four answers appended); every 3.0.0 field is unchanged.",
      "5.0.0": "`random_negatives`: for each caption, a caption of the same form about another scene, "
               "false of this one (ITM negatives keep their caption's form); every 4.0.0 field is "
               "unchanged.",
      "6.0.0": "A count caption's hard negative keeps the number and changes the colour or shape (a "
               "changed number told the label: true counts are mostly one); every other field is "
               "unchanged.",
      "7.0.0": "Scenes with the variation of real images: sizes over a wide range within each size "
               "class, aspect, rotation, partial occlusion, colour jitter inside each colour name's "
               "region; drawn anti-aliased and outlined over smooth backgrounds (\"varied\": train, "
               "validation, test) and, in a style training never sees, hard-edged with thick outlines "
               "over textures (\"textured\": the new `validation_style` split, validation's scenes). "
               "Boxes and region features come from the drawn objects' pixel masks. 6.0.0 stays "
               "buildable (`shapes_world/<config>:6.0.0`), byte for byte.",
  }
  BUILDER_CONFIGS = [
      ShapesWorldConfig(name="tiny", description="64 px, 1-4 objects; seconds to prepare.",
                        image_size=64, max_objects=4,
                        num_examples={"train": 4000, "validation": 512, "test": 512}),
      # tiny's scenes with ten times the training scenes: validation and test (and the first 4000
      # training scenes) are tiny's own, since a scene is fixed by (seed, split, index). VQA from
      # pixels needs this many scenes: on tiny's 4000 a model memorises the shape questions.
      ShapesWorldConfig(name="tiny_40k", description="tiny with 40000 training scenes; about 3 minutes to "
                        "prepare.", image_size=64, max_objects=4,
                        num_examples={"train": 40000, "validation": 512, "test": 512}),
      ShapesWorldConfig(name="small", description="64 px, 1-6 objects.", image_size=64, max_objects=6,
                        num_examples={"train": 40000, "validation": 2000, "test": 2000}),
      ShapesWorldConfig(name="base", description="128 px, 1-6 objects.", image_size=128, max_objects=6,
                        num_examples={"train": 200000, "validation": 5000, "test": 5000}),
      ShapesWorldConfig(name="tiny_224", description="224 px (ViT resolution), 1-4 objects.",
                        image_size=224, max_objects=4,
                        num_examples={"train": 1024, "validation": 256, "test": 256}),
      ShapesWorldConfig(name="large_224", description="224 px, 1-6 objects.", image_size=224,
                        max_objects=6, num_examples={"train": 200000, "validation": 5000, "test": 5000}),
  ]

  @property
  def canonical_version(self) -> tfds.core.Version:
    """The version asked for, once picked. tfds prepares only its canonical (newest) version, so that
    newer code does not write an older version by mistake; this code writes each of its versions as it
    was written (`_generate_examples` reads `self.version`), so every one may be prepared."""
    return getattr(self, "_version", None) or super().canonical_version

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({
            "image": f.Tensor(shape=(s, s, 3), dtype=np.uint8),
            "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
            "region_features": f.Tensor(shape=(None, scenes.FEATURE_DIM), dtype=np.float32),
            "colours": f.Tensor(shape=(None,), dtype=np.int32),
            "shapes": f.Tensor(shape=(None,), dtype=np.int32),
            "sizes": f.Tensor(shape=(None,), dtype=np.int32),
            "captions": f.Sequence(f.Text()),
            "caption_kinds": f.Tensor(shape=(None,), dtype=np.int32),
            "hard_negatives": f.Sequence(f.Text()),
            "hard_negative_kinds": f.Tensor(shape=(None,), dtype=np.int32),
            "random_negative": f.Text(),
            "random_negatives": f.Sequence(f.Text()),
            "labels": f.Tensor(shape=(None,), dtype=np.int32),
            "questions": f.Sequence(f.Text()),
            "answers": f.Tensor(shape=(None,), dtype=np.int32),
            "question_types": f.Tensor(shape=(None,), dtype=np.int32),
            "pair_index": np.int32,
            "pair_statement": f.Text(),
            "pair_label": np.int32,
        }),
        metadata=tfds.core.MetadataDict(
            answers=list(questions.ANSWERS), question_types=list(questions.QUESTION_TYPES),
            negative_kinds=list(scenes.NEGATIVE_KINDS), num_labels=scenes.NUM_LABELS),
        homepage="https://github.com/vlfusion/vlfusion",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n) for split, n in self.split_sizes().items()}

  def split_sizes(self) -> dict[str, int]:
    """{split: examples} of this builder's version: from 7.0.0, validation_style has validation's."""
    sizes = dict(self.builder_config.num_examples)
    if self.version >= FIRST_STYLED and "validation" in sizes:
      sizes["validation_style"] = sizes["validation"]
    return sizes

  def style(self, split: str) -> str | None:
    """The rendering style of `split`'s scenes at this builder's version (None: 6.0.0's flat one)."""
    return STYLES[split] if self.version >= FIRST_STYLED else None

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    style = self.style(split)
    sample = scenes.sample_scene if style is None else rendering.sample_scene
    for index in range(num_examples):
      partner = pair_index(split, index, num_examples)
      partner_objects = sample(
          np.random.default_rng([SEED, SPLIT_IDS[split], partner]), cfg.image_size, cfg.max_objects)
      rng = np.random.default_rng([SEED, SPLIT_IDS[split], index])
      example = scene_examples.make_example(rng, cfg.image_size, cfg.max_objects,
                                            partner=partner_objects, style=style)
      yield index, dict(example, pair_index=np.int32(partner))


def make_builder(name: str, data_dir: str | None = None) -> ShapesWorld:
  """The builder of `name` ("shapes_world/<config>[:<version>]") from this code.

  `tfds.builder` opens a name with an explicit version from its prepared files when they exist, as a
  read-only builder whose config has none of `ShapesWorldConfig`'s fields; the code writes every
  supported version, so it builds them all.
  """
  _, _, rest = name.partition("/")
  config, _, version = rest.partition(":")
  return ShapesWorld(config=config or None, version=version or None, data_dir=data_dir)


def pair_index(split: str, index: int, num_examples: int) -> int:
  """The scene that example `index` is paired with (its right image): another scene of the same split."""
  offset = int(np.random.default_rng([SEED, SPLIT_IDS[split], index, 1]).integers(1, num_examples))
  return (index + offset) % num_examples
