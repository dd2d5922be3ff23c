"""The contrastive loss: equal to sentence-transformers' symmetric MNRL when no concept repeats,
same-concept rows masked, and negatives gathered across 2 real gloo processes."""

import os
import socket

import pytest
import torch
import torch.nn.functional as F

from biolord_ray.training.losses import ConceptContrastiveLoss, concept_labels


def _embeddings(n: int, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)


def test_labels_are_stable_and_distinct():
    labels = concept_labels(["HP:1", "HP:2", "HP:1"])
    assert labels.dtype == torch.int64
    assert labels[0] == labels[2] != labels[1]
    assert torch.equal(labels, concept_labels(["HP:1", "HP:2", "HP:1"]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_equals_sentence_transformers_mnrl_without_repeated_concepts(symmetric):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    anchors, positives = _embeddings(6)
    ours = ConceptContrastiveLoss(None, scale=20.0, symmetric=symmetric)
    theirs = MultipleNegativesRankingLoss(
        None, scale=20.0,
        directions=("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",),
        partition_mode="per_direction")
    labels = concept_labels([f"C{i}" for i in range(6)])
    expected = theirs.compute_loss_from_embeddings([anchors, positives], labels)
    assert ours.compute_loss_from_embeddings([anchors, positives], labels) == \
        pytest.approx(float(expected), rel=1e-5)


def test_rows_of_one_concept_are_not_negatives_of_each_other():
    anchors, positives = _embeddings(4)
    labels = concept_labels(["A", "A", "B", "C"])  # rows 0 and 1: two names of concept A
    loss = ConceptContrastiveLoss(None, scale=10.0, symmetric=False)
    got = loss.compute_loss_from_embeddings([anchors, positives], labels)

    scores = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T * 10.0
    # Row 0 ranks positive 0 against 2 and 3 only; row 1 ranks positive 1 against 2 and 3.
    expected = torch.stack([
        -torch.log_softmax(scores[0, [0, 2, 3]], 0)[0],
        -torch.log_softmax(scores[1, [1, 2, 3]], 0)[0],
        -torch.log_softmax(scores[2], 0)[2],
        -torch.log_softmax(scores[3], 0)[3],
    ]).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    unmasked = F.cross_entropy(scores, torch.arange(4))
    assert float(got) < float(unmasked)  # the false negative no longer costs anything


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gathered_worker(rank: int, world: int, port: int, anchors, positives, labels, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = slice(rank * len(labels) // world, (rank + 1) * len(labels) // world)
        a = anchors[rows].clone().requires_grad_()
        p = positives[rows].clone().requires_grad_()
        loss = ConceptContrastiveLoss(None, scale=20.0, symmetric=True)
        value = loss.compute_loss_from_embeddings([a, p], labels[rows])
        value.backward()
        # numpy, not tensors: shared-memory tensors die with this process.
        out.put((rank, float(value.detach()), a.grad.numpy(), p.grad.numpy()))
    finally:
        dist.destroy_process_group()


def test_negatives_are_gathered_across_two_gloo_workers():
    """Two processes holding half a batch each give the full-batch loss, with the gradients
    a data-parallel step averages into the full-batch gradient."""
    import torch.multiprocessing as mp

    anchors, positives = _embeddings(8, seed=3)
    labels = concept_labels(["A", "B", "C", "A", "D", "E", "B", "F"])  # repeats across halves
    a = anchors.clone().requires_grad_()
    p = positives.clone().requires_grad_()
    full = ConceptContrastiveLoss(None, scale=20.0, symmetric=True) \
        .compute_loss_from_embeddings([a, p], labels)
    full.backward()

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_gathered_worker,
                         args=(r, 2, port, anchors, positives, labels, out)) for r in range(2)]
    for proc in procs:
        proc.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    assert sum(r[1] for r in results) / 2 == pytest.approx(float(full), rel=1e-5)
    # Each worker's rows get world_size x the full-batch gradient; averaging over workers
    # (what DeepSpeed does with parameter gradients) gives back the full-batch step.
    grads_a = torch.cat([torch.from_numpy(r[2]) for r in results]) / 2
    grads_p = torch.cat([torch.from_numpy(r[3]) for r in results]) / 2
    assert torch.allclose(grads_a, a.grad, atol=1e-6)
    assert torch.allclose(grads_p, p.grad, atol=1e-6)


def test_precision_setting_becomes_deepspeed_config(monkeypatch):
    from biolord_ray.config import TrainConfig
    from biolord_ray.training import loop

    mixed = loop.deepspeed_config(TrainConfig(precision="bf16-mixed"), 2, 10)
    assert mixed["torch_autocast"]["enabled"] and not mixed["bf16"]["enabled"]
    # Gradients stay fp32 and are all-reduced in fp32.
    assert mixed["torch_autocast"]["lower_precision_safe_modules"] == []
    pure = loop.deepspeed_config(TrainConfig(precision="bf16"), 2, 10)
    assert pure["bf16"]["enabled"] and not pure["torch_autocast"]["enabled"]
    fp32 = loop.deepspeed_config(TrainConfig(precision="fp32"), 2, 10)
    assert not fp32["bf16"]["enabled"] and not fp32["torch_autocast"]["enabled"]

    assert loop.resolve_precision(TrainConfig(precision="auto", use_gpu=True)) == "bf16-mixed"
    for has_bf16, expected in ((True, "bf16-mixed"), (False, "fp32")):
        monkeypatch.setattr(loop, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert loop.resolve_precision(TrainConfig(precision="auto")) == expected
