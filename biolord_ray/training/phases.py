"""What each training phase puts into the shared loop (``loop.Phase``): its loss and how a
batch of dataset rows becomes the loss's inputs.

* contrastive (BioLORD-2023-C): (name, definition or description) pairs, in-batch negatives
  with same-concept rows masked (``ConceptContrastiveLoss``);
* distill (-S) and multilingual (-M): a text regressed onto its teacher embedding
  (``EmbeddingRegressionLoss``); distillation trials share one base model, scored once by
  the driver, so they skip the step-0 validation.

Free of Ray and of the stages, so that a plain process (benchmarks/gpu_step.py) builds the
same training step as a Ray Train worker.
"""

from __future__ import annotations

import numpy as np

from biolord_ray.training.loop import Phase


def contrastive_loss(model, tcfg):
    """``tcfg``: the contrastive section (ContrastiveConfig), the only one with the loss's
    ``scale`` and ``symmetric``."""
    from biolord_ray.training.losses import ConceptContrastiveLoss

    return ConceptContrastiveLoss(model, scale=tcfg.scale, symmetric=tcfg.symmetric)


def pair_collate(model):
    from biolord_ray.training.losses import concept_labels

    def collate(batch: dict[str, np.ndarray]) -> dict:
        return {"anchor": model.preprocess(list(batch["anchor"])),
                "positive": model.preprocess(list(batch["positive"])),
                "labels": concept_labels(batch["concept_id"])}
    return collate


def regression_loss(model, tcfg):
    from biolord_ray.training.losses import EmbeddingRegressionLoss

    return EmbeddingRegressionLoss(model)


def target_collate(model):
    import torch

    def collate(batch: dict[str, np.ndarray]) -> dict:
        return {"text": model.preprocess(list(batch["text"])),
                "target": torch.from_numpy(np.stack(batch["target"]).astype(np.float32))}
    return collate


CONTRASTIVE = Phase("contrastive", contrastive_loss, pair_collate)
DISTILL = Phase("distill", regression_loss, target_collate, validate_base=False,
                group_by_length="text")
MULTILINGUAL = Phase("multilingual", regression_loss, target_collate, group_by_length="text")
