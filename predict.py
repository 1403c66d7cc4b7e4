"""Runs a trained model on images and texts and prints JSON (`vlfusion.load`'s predictor).

  python predict.py --workdir=W --image=scene.png --question="what colour is the circle?"
  python predict.py --workdir=W --image=a.png --image=b.png --question="how many shapes are there?" --top_k=3
  python predict.py --workdir=W --task=match --image=a.png --text="a red circle left of a blue square"
  python predict.py --hf_dir=/ckpt/lxmert-pretrain --task=match --image=regions.npz --text="a man on a horse"

One question (or text) pairs with every image, one image with every text, or give as many of each as
rows. Region-feature models read `--image=<file.npz>` holding `features` [R,F] and `boxes` [R,4]. Prints
{"source", "step", "task", "results": [{"image", "text", ...}]}: `answers` ([answer, score], best
first) for vqa, `match` (ITM probability) or `similarity` (ITC cosine).
"""

import json

from absl import app, flags

from vlfusion import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "A vlfusion workdir (config.json and checkpoints/).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "An HF LXMERT / VisualBERT / ViLT directory instead.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the latest complete).")
_IMAGE = flags.DEFINE_multi_string("image", [], "An image file (repeatable); .npz regions for region models.")
_QUESTION = flags.DEFINE_multi_string("question", [], "A question (repeatable); --task=vqa.")
_TEXT = flags.DEFINE_multi_string("text", [], "A text (repeatable); --task=match or similarity.")
_TASK = flags.DEFINE_enum("task", "vqa", ["vqa", "match", "similarity"], "What to predict.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Answers per question (--task=vqa).")


def main(argv):
  del argv
  if (_WORKDIR.value is None) == (_HF_DIR.value is None):
    raise app.UsageError("give exactly one of --workdir and --hf_dir")
  if not _IMAGE.value:
    raise app.UsageError("give at least one --image")
  texts = _QUESTION.value if _TASK.value == "vqa" else _TEXT.value
  if not texts:
    raise app.UsageError("--task=vqa needs --question" if _TASK.value == "vqa" else
                         f"--task={_TASK.value} needs --text")
  runtime.initialize()
  import vlfusion
  from vlfusion.inference import predict_record

  model = vlfusion.load(_WORKDIR.value or _HF_DIR.value, step=_STEP.value)
  print(json.dumps(predict_record(model, _TASK.value, _IMAGE.value, texts, _TOP_K.value), indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
