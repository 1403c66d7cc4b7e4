"""Image-text retrieval (COCO/Flickr30K style): every caption of every image of the split, ranked by
the ITC embeddings and re-ranked by ITM (`evaluation.retrieval`). An evaluation over the `itc` head
(and `itm` where the model has it); it reads the split its own way, not batch by batch.
"""

from __future__ import annotations

from vlfusion.tasks.base import Task

TASK = Task(
    name="retrieval",
    eval_head="itc",
    eval_rows="itc",
    evaluator="vlfusion.evaluation.retrieval:RetrievalEvaluator",
)
