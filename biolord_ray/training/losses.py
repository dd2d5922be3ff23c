"""The contrastive loss: in-batch negatives over (name, definition) pairs, same-concept rows
masked, negatives gathered across Ray Train workers.

sentence-transformers' ``MultipleNegativesRankingLoss`` with
``directions=("query_to_doc", "doc_to_query")``, ``partition_mode="per_direction"`` and
``gather_across_devices=True`` is this loss without the mask: it ignores labels, so two names
of one concept in a batch (or a name paired with two of its definitions) would be pushed
apart as negatives. ``ConceptContrastiveLoss`` follows its interface and computation, adds
the mask, and reuses its gather helpers.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def concept_labels(concept_ids) -> Tensor:
    """Stable int64 labels for concept ids, equal on every worker (Python's ``hash`` is
    salted per process)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(str(c).encode(), digest_size=8).digest(),
                                        "little", signed=True) for c in concept_ids],
                        dtype=torch.int64)


class ConceptContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between anchors (names) and positives (definitions, descriptions).

    For anchor i the positive i is the target among every positive of the global batch; a
    positive j of the same concept (j != i) is masked out of the softmax instead of counting
    as a negative. ``symmetric`` adds the positive -> anchor direction and averages the two.
    """

    def __init__(self, model: nn.Module, scale: float = 20.0, symmetric: bool = True,
                 gather_across_devices: bool = True):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.model = model
        self.scale = scale
        self.symmetric = symmetric
        self.gather_across_devices = gather_across_devices

    def forward(self, anchor: dict[str, Tensor], positive: dict[str, Tensor],
                labels: Tensor) -> Tensor:
        embeddings = [self.model(anchor)["sentence_embedding"],
                      self.model(positive)["sentence_embedding"]]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        from sentence_transformers.util import all_gather, all_gather_with_grad, get_rank

        # The similarities in fp32 even when the encoder runs in bf16.
        anchors, positives = (e.float() for e in embeddings)
        labels = labels.to(anchors.device)
        all_anchors, all_positives, all_labels, offset = anchors, positives, labels, 0
        if self.gather_across_devices and _world_size() > 1:
            # Gradients flow back to each worker's own rows (all_gather_with_grad's backward).
            all_anchors = all_gather_with_grad(anchors)
            all_positives = all_gather_with_grad(positives)
            all_labels = all_gather(labels)
            offset = get_rank() * anchors.size(0)
        rows = torch.arange(anchors.size(0), device=anchors.device)
        targets = rows + offset
        same_concept = labels[:, None] == all_labels[None, :]
        same_concept[rows, targets] = False  # the pair itself stays the target

        loss = self._direction(anchors, all_positives, same_concept, targets)
        if self.symmetric:
            loss = (loss + self._direction(positives, all_anchors, same_concept, targets)) / 2
        return loss

    def _direction(self, queries: Tensor, candidates: Tensor, mask: Tensor,
                   targets: Tensor) -> Tensor:
        scores = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T * self.scale
        return F.cross_entropy(scores.masked_fill(mask, float("-inf")), targets)

    def get_config_dict(self) -> dict:
        return {"scale": self.scale, "symmetric": self.symmetric,
                "gather_across_devices": self.gather_across_devices,
                "same_concept_masking": True}


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class EmbeddingRegressionLoss(nn.Module):
    """sentence-transformers' ``MSELoss`` (the student's embedding regressed onto the teacher's)
    with keyword inputs: the training loop calls ``loss(**batch)`` for every phase."""

    def __init__(self, model: nn.Module):
        from sentence_transformers.sentence_transformer.losses import MSELoss

        super().__init__()
        self.mse = MSELoss(model)  # the attribute name is in every checkpoint's state keys

    def forward(self, text: dict[str, Tensor], target: Tensor) -> Tensor:
        return self.mse([text], target)
