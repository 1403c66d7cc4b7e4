"""Tiny real-format dataset files for tests: JPEGs, Karpathy JSON, VQA v2 JSON, JSONL, region TSV/npz."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
from PIL import Image

FEATURE_DIM = 2048
CAPTIONS = ["a dog runs on the beach", "two people ride bicycles", "a red bus on a street",
            "a cat sleeps on a sofa", "a plate of pasta", "children play football in a park"]


def write_jpeg(path: str, seed: int, size: tuple[int, int] = (48, 40)) -> None:
  """A real JPEG whose pixels depend on `seed`."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  pixels = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size[1], size[0], 3)).copy()
  pixels[: size[1] // 2] = 255 - pixels[: size[1] // 2]
  Image.fromarray(pixels).save(path, format="JPEG")


def write_corrupt(path: str, *_: object) -> None:
  """A file named like a JPEG that is not one (a truncated header followed by junk)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")


def coco_filename(subset: str, image_id: int) -> str:
  return f"COCO_{subset}_{image_id:012d}.jpg"


def write_coco(root: str, corrupt_ids: tuple[int, ...] = ()) -> dict[str, list[int]]:
  """A Karpathy-split dataset_coco.json with images under images/<subset>/; returns ids by split."""
  entries, ids = [], {"train": [], "restval": [], "val": [], "test": []}
  splits = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
  for n, split in enumerate(splits):
    image_id = 100 + n
    subset = "train2014" if split == "train" else "val2014"
    path = os.path.join(root, "images", subset, coco_filename(subset, image_id))
    (write_corrupt if image_id in corrupt_ids else write_jpeg)(path, image_id)
    ids[split].append(image_id)
    entries.append({"filepath": subset, "filename": coco_filename(subset, image_id), "cocoid": image_id,
                    "split": split, "sentences": [{"raw": CAPTIONS[n % 6], "tokens": []},
                                                  {"raw": CAPTIONS[(n + 1) % 6], "tokens": []}]})
  with open(os.path.join(root, "dataset_coco.json"), "w") as f:
    json.dump({"images": entries, "dataset": "coco"}, f)
  return ids


def write_jsonl(root: str, num_train: int = 40, corrupt: tuple[int, ...] = (),
                size: tuple[int, int] = (48, 40)) -> None:
  """train.jsonl and validation.jsonl of {"image", "text"} with JPEGs under img/."""
  for split, n in (("train", num_train), ("validation", 8)):
    with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
      for i in range(n):
        image = f"img/{split}_{i}.jpg"
        (write_corrupt if split == "train" and i in corrupt else write_jpeg)(
            os.path.join(root, image), i + 1000 * (split == "validation"), size)
        f.write(json.dumps({"image": image, "text": CAPTIONS[i % len(CAPTIONS)]}) + "\n")


def write_vqa(root: str) -> list[dict]:
  """VQA v2 questions and annotations for train2014 and val2014, with images; returns train annotations."""
  answer_sets = [["yes"] * 10, ["2"] * 3 + ["two"] * 2 + ["3"] * 5, ["red"] * 1 + ["blue"] * 9,
                 ["a dog"] * 4 + ["dog"] * 4 + ["cat"] * 2]
  train_annotations = []
  for subset, image_ids in (("train2014", [1, 2]), ("val2014", [3])):
    questions, annotations = [], []
    for image_id in image_ids:
      write_jpeg(os.path.join(root, subset, coco_filename(subset, image_id)), image_id)
      for k, answers in enumerate(answer_sets):
        qid = image_id * 10 + k
        questions.append({"image_id": image_id, "question": f"question {k} about image {image_id}?",
                          "question_id": qid})
        annotations.append({
            "question_id": qid, "image_id": image_id, "question_type": "what", "answer_type": "other",
            "multiple_choice_answer": answers[-1],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                        for j, a in enumerate(answers)]})
    with open(os.path.join(root, f"v2_OpenEnded_mscoco_{subset}_questions.json"), "w") as f:
      json.dump({"questions": questions}, f)
    with open(os.path.join(root, f"v2_mscoco_{subset}_annotations.json"), "w") as f:
      json.dump({"annotations": annotations}, f)
    if subset == "train2014":
      train_annotations = annotations
  return train_annotations


def region_arrays(image_id: int, num_boxes: int = 3) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(image_id)
  boxes = np.array([[10 * i, 5 * i, 10 * i + 30, 5 * i + 20] for i in range(num_boxes)], np.float32)
  return {"features": rng.random((num_boxes, FEATURE_DIM), dtype=np.float32), "boxes": boxes,
          "objects_id": np.arange(num_boxes, dtype=np.int64) + image_id, "img_h": 100, "img_w": 200}


def _b64(array: np.ndarray) -> str:
  return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def tsv_line(image_id, arrays: dict[str, np.ndarray]) -> str:
  n = len(arrays["features"])
  return "\t".join([
      str(image_id), str(arrays["img_h"]), str(arrays["img_w"]), _b64(arrays["objects_id"]),
      _b64(np.ones(n, np.float32)), _b64(np.zeros(n, np.int64)), _b64(np.ones(n, np.float32)), str(n),
      _b64(arrays["boxes"]), _b64(arrays["features"])])


def write_regions(root: str, tsv_ids: list, npz_ids: list[int]) -> None:
  """regions/features.tsv (bottom-up-attention format) for `tsv_ids`, regions/<id>.npz for `npz_ids`."""
  directory = os.path.join(root, "regions")
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "features.tsv"), "w") as f:
    for image_id in tsv_ids:
      f.write(tsv_line(image_id, region_arrays(int(str(image_id).split("_")[-1]))) + "\n")
  for image_id in npz_ids:
    np.savez(os.path.join(directory, f"{image_id}.npz"), **region_arrays(image_id))


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def write_vqa_colours(root: str, images: dict[str, list[tuple[str, tuple[int, int]]]],
                      questions_per_image: int = 5) -> dict[str, list[int]]:
  """VQA v2 files in the release's layout whose questions all ask an image's colour.

  `images` maps a subset (train2014, val2014) to (colour name of `COLOURS`, (width, height)) per image;
  each image is one solid colour and gets `questions_per_image` consecutive questions ("what color is
  ...?", answered with its colour by all ten annotators), as VQA v2 lists them. Returns the image ids of
  each subset.
  """
  ids: dict[str, list[int]] = {}
  for subset, specs in images.items():
    questions, annotations = [], []
    ids[subset] = []
    for n, (colour, size) in enumerate(specs):
      image_id = 500 + n if subset == "val2014" else 100 + n
      ids[subset].append(image_id)
      path = os.path.join(root, subset, coco_filename(subset, image_id))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      pixels = np.broadcast_to(np.array(COLOURS[colour], np.uint8), (size[1], size[0], 3)).copy()
      Image.fromarray(pixels).save(path, format="JPEG")
      for k in range(questions_per_image):
        qid = image_id * 10 + k
        questions.append({"image_id": image_id, "question": f"what color is thing {k}?", "question_id": qid})
        annotations.append({
            "question_id": qid, "image_id": image_id, "question_type": "what color is",
            "answer_type": "other", "multiple_choice_answer": colour,
            "answers": [{"answer": colour, "answer_confidence": "yes", "answer_id": j + 1}
                        for j in range(10)]})
    with open(os.path.join(root, f"v2_OpenEnded_mscoco_{subset}_questions.json"), "w") as f:
      json.dump({"questions": questions}, f)
    with open(os.path.join(root, f"v2_mscoco_{subset}_annotations.json"), "w") as f:
      json.dump({"annotations": annotations}, f)
  return ids


def edit_json(path: str, edit) -> None:
  """Rewrites the JSON file at `path` with `edit(data)` applied to its parsed content in place."""
  with open(path) as f:
    data = json.load(f)
  edit(data)
  with open(path, "w") as f:
    json.dump(data, f)
