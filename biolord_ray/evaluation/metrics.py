"""Metrics on L2-normalised embeddings: pair correlations, concept retrieval, hierarchy AUC,
translation retrieval."""

from __future__ import annotations

import numpy as np


def cosine_pairs(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two matrices of unit vectors."""
    return np.einsum("ij,ij->i", emb1, emb2)


def correlations(predicted: np.ndarray, gold: list[float] | np.ndarray) -> dict[str, float]:
    """Spearman (the main metric of the similarity benchmarks) and Pearson correlation."""
    from scipy.stats import pearsonr, spearmanr

    return {"spearman": float(spearmanr(predicted, gold).statistic),
            "pearson": float(pearsonr(predicted, gold).statistic)}


def concept_retrieval(query_emb: np.ndarray, query_concepts: np.ndarray,
                      index_emb: np.ndarray, index_concepts: np.ndarray,
                      ks: tuple[int, ...] = (1, 5), mrr_at: int = 10) -> dict[str, float]:
    """Rank concepts for each query by their best-matching name: accuracy@k and MRR@mrr_at.

    ``query_concepts`` / ``index_concepts`` hold integer concept numbers; a concept with
    several names in the index scores the maximum over its names. Written by hand because
    sentence-transformers' InformationRetrievalEvaluator ranks documents (here: names, several
    per concept) and encodes the corpus itself, whereas the index here is embedded by Ray Data
    actors when it is large.
    """
    import torch

    n_concepts = int(index_concepts.max()) + 1
    depth = min(max(max(ks), mrr_at), n_concepts)
    index = torch.from_numpy(np.ascontiguousarray(index_emb, dtype=np.float32))
    owners = torch.from_numpy(index_concepts.astype(np.int64))
    gold = torch.from_numpy(query_concepts.astype(np.int64))
    # Queries go in chunks so the (chunk x concepts) score matrix stays under ~256 MB.
    chunk = max(1, min(1024, (1 << 26) // max(len(index), n_concepts)))
    ranks = []
    for start in range(0, len(query_emb), chunk):
        q = torch.from_numpy(np.ascontiguousarray(query_emb[start:start + chunk],
                                                  dtype=np.float32))
        sims = q @ index.T
        per_concept = torch.full((len(q), n_concepts), -torch.inf)
        per_concept.scatter_reduce_(1, owners.expand(len(q), -1), sims, reduce="amax")
        top = per_concept.topk(depth, dim=1).indices
        hit = top == gold[start:start + chunk, None]
        # 1-based rank of the gold concept within the top `depth`, 0 where it is not there.
        ranks.append(torch.where(hit.any(1), hit.int().argmax(1) + 1, 0))
    rank = torch.cat(ranks).numpy()
    metrics = {f"acc@{k}": float(((rank >= 1) & (rank <= k)).mean()) for k in ks}
    within = (rank >= 1) & (rank <= mrr_at)
    metrics[f"mrr@{mrr_at}"] = float(np.where(within, 1.0 / np.maximum(rank, 1), 0.0).mean())
    return metrics


def translation_accuracy(source_emb: np.ndarray, target_emb: np.ndarray,
                         sources: list[str], targets: list[str]) -> dict[str, float]:
    """How often each source's nearest target is its translation (src2trg), and back
    (trg2src); a duplicated string counts as found wherever it is. The metric of
    sentence-transformers' TranslationEvaluator, written here because that evaluator embeds
    both sides itself: here they come from the suite's Embedder, once per text, and are
    shared with the MSE to the teacher."""
    nearest = source_emb @ target_emb.T
    sources_, targets_ = np.asarray(sources, dtype=object), np.asarray(targets, dtype=object)
    src2trg = float(np.mean(targets_[nearest.argmax(axis=1)] == targets_))
    trg2src = float(np.mean(sources_[nearest.argmax(axis=0)] == sources_))
    return {"src2trg": src2trg, "trg2src": trg2src, "accuracy": (src2trg + trg2src) / 2}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating label 1 from label 0."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))
