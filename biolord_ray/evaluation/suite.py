"""The evaluation suite: which tasks to run, and running them on one model.

Four kinds of task, each returning a flat dict of metrics:

* similarity (file benchmarks): Spearman (main) and Pearson of cosine against gold scores;
* retrieval (KG): held-out synonym -> concept and definition -> concept, accuracy@1 (main),
  accuracy@5 and MRR@10 over every concept of the index;
* hierarchy (KG): ROC AUC (main) of cosine separating parent-child from random pairs;
* translation (``parallel_data``, per language): accuracy of finding a held-out pair's
  translation among all translations and back (mean of the two: main), and the MSE between
  the model's embedding of the translation and the teacher's of the English text.

``EvalSuite.run(model)`` is also the validation metric during training: the fast suite is
a few hundred texts, small enough to run on rank 0 after every checkpoint.

Each result records its task's ``domain``: "general" for general-language benchmarks (the
``stsb`` preset), "biomedical" for everything else. ``main_score``, the number models are
selected by, averages the biomedical ones only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biolord_ray import keys, stages
from biolord_ray.config import EvalConfig
from biolord_ray.evaluation import metrics
from biolord_ray.evaluation.benchmark_files import BIOMEDICAL, BUNDLED, GENERAL, PairSet, load_pairs
from biolord_ray.models.encode import Embedder
from biolord_ray.run_dir import RunDir

log = logging.getLogger(__name__)

MAIN_METRIC = {"similarity": "spearman", "retrieval": "acc@1", "hierarchy": "roc_auc",
               "translation": "accuracy"}


@dataclass
class SimilarityTask:
    name: str
    pairs: PairSet
    kind: str = "similarity"

    @property
    def domain(self) -> str:
        return self.pairs.domain  # from the file's preset

    def run(self, model, embed: Embedder) -> dict:
        from sentence_transformers.sentence_transformer.evaluation import (
            EmbeddingSimilarityEvaluator,
        )

        evaluator = EmbeddingSimilarityEvaluator(
            self.pairs.texts1, self.pairs.texts2, self.pairs.scores, batch_size=embed.batch_size,
            main_similarity="cosine", similarity_fn_names=["cosine"], name=self.name,
            write_csv=False)
        scores = evaluator(model)
        return {"spearman": scores[f"{self.name}_spearman_cosine"],
                "pearson": scores[f"{self.name}_pearson_cosine"],
                "n_pairs": len(self.pairs.scores), "n_skipped": self.pairs.n_skipped}


@dataclass
class RetrievalTask:
    name: str
    query_texts: list[str]
    query_concepts: list[str]
    index_texts: list[str]
    index_concepts: list[str]
    kind: str = "retrieval"
    domain: str = BIOMEDICAL

    def run(self, model, embed: Embedder) -> dict:
        concept_ids = sorted(set(self.index_concepts))
        number = {cid: i for i, cid in enumerate(concept_ids)}
        scores = metrics.concept_retrieval(
            embed(self.query_texts), np.array([number[c] for c in self.query_concepts]),
            embed(self.index_texts), np.array([number[c] for c in self.index_concepts]))
        return {**scores, "n_queries": len(self.query_texts),
                "n_index_names": len(self.index_texts), "n_index_concepts": len(concept_ids)}


@dataclass
class HierarchyTask:
    name: str
    texts1: list[str]
    texts2: list[str]
    labels: list[int]
    kind: str = "hierarchy"
    domain: str = BIOMEDICAL

    def run(self, model, embed: Embedder) -> dict:
        similarity = metrics.cosine_pairs(embed(self.texts1), embed(self.texts2))
        labels = np.array(self.labels)
        return {"roc_auc": metrics.roc_auc(similarity, labels), "n_pairs": len(labels),
                "n_positive": int(labels.sum())}


@dataclass
class TranslationTask:
    name: str
    english: list[str]
    translations: list[str]
    teacher: np.ndarray  # the teacher's embedding of each English text
    kind: str = "translation"
    domain: str = BIOMEDICAL

    def run(self, model, embed: Embedder) -> dict:
        translations = embed(self.translations)
        found = metrics.translation_accuracy(embed(self.english), translations, self.english,
                                             self.translations)
        # sentence-transformers' MSEEvaluator would embed the English side with the teacher
        # again; its embeddings are stored with the pairs.
        mse = float(np.mean((translations - self.teacher) ** 2))
        return {**found, "mse": mse, "n_pairs": len(self.english)}


Task = SimilarityTask | RetrievalTask | HierarchyTask | TranslationTask


@dataclass
class EvalSuite:
    tasks: list[Task] = field(default_factory=list)
    fast: bool = False

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def run(self, model, embed: Embedder | None = None) -> dict[str, dict]:
        """Metrics per task for one loaded SentenceTransformer."""
        embed = embed or Embedder(model)
        embed.clear()
        results = {}
        for task in self.tasks:
            started = time.time()
            results[task.name] = {**task.run(model, embed), "kind": task.kind,
                                  "main_metric": MAIN_METRIC[task.kind],
                                  "domain": task.domain,
                                  "seconds": round(time.time() - started, 2)}
            log.info("%s: %s", task.name, {k: v for k, v in results[task.name].items()
                                           if isinstance(v, float)})
        embed.clear()
        return results


def is_general(result: dict) -> bool:
    """A general-language benchmark's result (results written before domains were recorded
    are all biomedical)."""
    return result.get("domain") == GENERAL


def main_score(results: dict[str, dict]) -> float:
    """One number for model selection (checkpoints, Ray Tune, soups): the mean of each
    biomedical task's main metric. General-language benchmarks are reported beside it, not
    averaged in, so adding one changes no selection; a suite of general benchmarks alone is
    scored on those."""
    biomedical = [r for r in results.values() if not is_general(r)]
    return float(np.mean([r[r["main_metric"]] for r in biomedical or results.values()]))


# ---------------------------------------------------------------------------------------
# Building a suite

def dev_tasks() -> list[Task]:
    """The bundled dev files (suite "dev")."""
    return [SimilarityTask(name, load_pairs(name, path, preset))
            for name, (preset, path) in BUNDLED.items()]


def file_tasks(cfg: EvalConfig) -> list[Task]:
    """The config's file benchmarks (suite "files")."""
    return [SimilarityTask(b.name, load_pairs(b.name, b.path, b.preset, b.text1, b.text2,
                                              b.score)) for b in cfg.benchmarks]


def kg_tasks(run_dir: RunDir, cfg: EvalConfig, fast: bool = False) -> list[Task]:
    """Entity linking, definition retrieval and hierarchy from the run's ``eval_sets`` stage."""
    fs = run_dir.fs
    names = pq.read_table(run_dir.output(stages.EVAL_SETS, "names"), filesystem=fs)
    definitions = pq.read_table(run_dir.output(stages.EVAL_SETS, "definitions"), filesystem=fs)
    hierarchy = pq.read_table(run_dir.output(stages.EVAL_SETS, "hierarchy"), filesystem=fs)

    max_queries = cfg.fast_max_queries if fast else cfg.max_queries
    synonyms = _first(names.filter(names["held_out"]).sort_by("draw"), max_queries)
    definitions = _first(definitions.sort_by("draw"), max_queries)
    index = names.filter(pc.invert(names["held_out"]))
    cap = cfg.fast_index_concepts if fast else cfg.max_index_concepts
    if cap is not None:
        wanted = set(synonyms["concept_id"].to_pylist()) | \
            set(definitions["concept_id"].to_pylist())
        index = _cap_index(index, wanted, cap)

    tasks: list[Task] = []
    for name, queries in (("kg-linking", synonyms), ("kg-definitions", definitions)):
        if queries.num_rows == 0:
            log.warning("%s: no held-out %s in this KG; task left out", name,
                        "synonyms" if name == "kg-linking" else "definitions")
            continue
        tasks.append(RetrievalTask(name, queries["text"].to_pylist(),
                                   queries["concept_id"].to_pylist(),
                                   index["text"].to_pylist(), index["concept_id"].to_pylist()))
    if fast:
        hierarchy = hierarchy.slice(0, 2 * cfg.fast_max_pairs)  # rows alternate +/-, in order
    if len(set(hierarchy["label"].to_pylist())) == 2:
        tasks.append(HierarchyTask("kg-hierarchy", hierarchy["text_1"].to_pylist(),
                                   hierarchy["text_2"].to_pylist(),
                                   hierarchy["label"].to_pylist()))
    else:
        log.warning("kg-hierarchy: fewer than 2 is_a relations in this KG; task left out")
    return tasks


def translation_tasks(run_dir: RunDir, cfg: EvalConfig, fast: bool = False) -> list[Task]:
    """One task per language from the held-out pairs of the ``parallel_data`` stage: each
    English text once (with its first translation), in a seeded order, capped."""

    rows = pq.read_table(run_dir.output(stages.PARALLEL_DATA, "validation"), filesystem=run_dir.fs)
    rows = rows.filter(pc.equal(rows["kind"], "translation"))
    cap = cfg.fast_max_queries if fast else cfg.max_queries
    tasks: list[Task] = []
    for language in sorted(set(rows["language"].to_pylist())):
        pairs = rows.filter(pc.equal(rows["language"], language)).to_pylist()
        first = {}
        for pair in pairs:
            first.setdefault(pair["english"], pair)
        chosen = sorted(first.values(), key=lambda p: keys.draw(cfg.seed, p["english"]))
        chosen = chosen[:cap] if cap is not None else chosen
        tasks.append(TranslationTask(
            f"translation-{language}", [p["english"] for p in chosen],
            [p["text"] for p in chosen], np.array([p["target"] for p in chosen], np.float32)))
    if not tasks:
        log.warning("translation: no held-out pairs in the parallel_data stage; left out")
    return tasks


def build_suite(cfg: EvalConfig, suites: list[str], run_dir: RunDir | None = None,
                fast: bool = False) -> EvalSuite:
    tasks: list[Task] = []
    if "dev" in suites:
        tasks += dev_tasks()
    if "files" in suites:
        tasks += file_tasks(cfg)
    if "kg" in suites:
        if run_dir is None:
            raise ValueError("the kg suite needs a run directory with the eval_sets stage")
        tasks += kg_tasks(run_dir, cfg, fast)
    if "translation" in suites:
        if run_dir is None:
            raise ValueError("the translation suite needs a run directory with the "
                             "parallel_data stage")
        tasks += translation_tasks(run_dir, cfg, fast)
    duplicated = {n for n in (t.name for t in tasks) if [t.name for t in tasks].count(n) > 1}
    if duplicated:
        raise ValueError(f"benchmark name(s) used twice: {', '.join(sorted(duplicated))}")
    return EvalSuite(tasks, fast=fast)


def _first(table: pa.Table, n: int | None) -> pa.Table:
    return table if n is None else table.slice(0, n)


def _cap_index(index: pa.Table, wanted: set[str], cap: int) -> pa.Table:
    """Keep the names of the ``wanted`` concepts, then other concepts (in a seeded order) up to
    ``cap`` concepts in all."""
    order = index.group_by("concept_id").aggregate([("draw", "min")]).sort_by("draw_min")
    others = [c for c in order["concept_id"].to_pylist() if c not in wanted]
    keep = sorted(wanted) + others[:max(0, cap - len(wanted))]
    return index.filter(pc.is_in(index["concept_id"], pa.array(keep, pa.string())))
