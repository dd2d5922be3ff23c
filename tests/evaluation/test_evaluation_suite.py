"""The evaluation suite with a real model (all-MiniLM-L6-v2) and the real bundled HPO."""

import copy
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from biolord_ray.config import DISEASE_GLOSSARY
from biolord_ray.evaluation import eval_sets
from biolord_ray.evaluation.benchmark_files import load_pairs
from biolord_ray.evaluation.suite import (
    EvalSuite,
    SimilarityTask,
    TranslationTask,
    build_suite,
    main_score,
)
from biolord_ray.kg import ingest
from biolord_ray.models.encode import Embedder, load_sentence_model, sentence_model_dir

ROOT = Path(__file__).resolve().parents[2]
MINILM = "packaged:all-MiniLM-L6-v2"
PAIRS = [("heart attack", "myocardial infarction"), ("fever", "pyrexia"),
         ("kidney stone", "nephrolithiasis"), ("fracture of femur", "broken thigh bone"),
         ("acne", "lung cancer"), ("headache", "knee replacement")]


@pytest.fixture(scope="module")
def minilm():
    return load_sentence_model(sentence_model_dir(MINILM), device="cpu")


@pytest.mark.parametrize("direction, expected", [(1, 1.0), (-1, -1.0)])
def test_perfect_and_reversed_rank_files(tmp_path, minilm, direction, expected):
    a = minilm.encode([p[0] for p in PAIRS], normalize_embeddings=True)
    b = minilm.encode([p[1] for p in PAIRS], normalize_embeddings=True)
    cosine = (a * b).sum(1)
    gold = np.argsort(np.argsort(direction * cosine)) + 1  # ranks 1..n in that order
    path = tmp_path / "ranked.tsv"
    path.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{s1}\t{s2}\t{g}\n" for (s1, s2), g in zip(PAIRS, gold, strict=True)) + "\t\t3\n")
    suite = EvalSuite([SimilarityTask("ranked", load_pairs("ranked", path, "biosses"))])
    result = suite.run(minilm)["ranked"]
    assert result["spearman"] == pytest.approx(expected)
    assert (result["n_pairs"], result["n_skipped"]) == (6, 1)
    assert main_score(suite.run(minilm)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def eval_run(hpo_run):
    cfg, run_dir, _ = hpo_run
    cfg = copy.deepcopy(cfg)  # the session's config, shared with other tests
    cfg.eval.holdout_fraction = 0.3  # 400 concepts: enough queries for the test
    record = eval_sets.run(cfg, run_dir)
    return cfg, run_dir, record


def test_eval_sets_hold_out_synonyms_never_preferred_names(eval_run):
    cfg, run_dir, record = eval_run
    concepts = {c["concept_id"]: c for c in ingest.read_concepts(run_dir).to_pylist()}
    names = pq.read_table(run_dir.output(eval_sets.STAGE, "names")).to_pylist()
    held = [n for n in names if n["held_out"]]
    assert record["counts"]["held_out_synonyms"] == len(held) > 20
    assert record["counts"]["index_names"] == len(names) - len(held)
    preferred = {c["preferred_name"] for c in concepts.values()}
    for row in held:
        concept = concepts[row["concept_id"]]
        assert row["text"] != concept["preferred_name"]
        assert {"text": row["text"], "type": "exact"} in [
            {"text": s["text"], "type": s["type"]} for s in concept["synonyms"]]
    # Every concept keeps its preferred name in the index.
    indexed = {(n["concept_id"], n["text"]) for n in names if not n["held_out"]}
    assert all((cid, c["preferred_name"]) in indexed for cid, c in concepts.items())
    assert len(held) == pytest.approx(0.3 * sum(
        1 for c in concepts.values() for s in c["synonyms"] if s["type"] == "exact"
        and s["text"] not in preferred), rel=0.35)
    # A rerun with the same config is skipped; the choice is a pure function of the seed.
    assert eval_sets.run(cfg, run_dir)["finished_at"] == record["finished_at"]
    again = eval_sets.split_names(ingest.read_concepts(run_dir), 0.3, ["exact"], cfg.eval.seed)
    assert sorted(again.to_pylist(), key=str) == sorted(names, key=str)


def test_eval_sets_hierarchy_pairs_are_real_edges_and_random_pairs(eval_run):
    _, run_dir, record = eval_run
    edges = {(r["head_id"], r["tail_id"]) for r in ingest.read_relations(run_dir).to_pylist()
             if r["relation"] == "is_a"}
    pairs = pq.read_table(run_dir.output(eval_sets.STAGE, "hierarchy")).to_pylist()
    positives = [p for p in pairs if p["label"] == 1]
    negatives = [p for p in pairs if p["label"] == 0]
    assert record["counts"]["hierarchy_pairs"] == len(positives) > 100
    assert len(negatives) > 0.9 * len(positives)
    assert all((p["id_1"], p["id_2"]) in edges for p in positives)
    assert not any((p["id_1"], p["id_2"]) in edges or (p["id_2"], p["id_1"]) in edges
                   for p in negatives)


def test_kg_tasks_full_and_fast(eval_run, minilm):
    cfg, run_dir, _ = eval_run
    full = build_suite(cfg.eval, ["kg"], run_dir)
    assert full.names == ["kg-linking", "kg-definitions", "kg-hierarchy"]
    linking = full.tasks[0]
    assert not set(zip(linking.query_concepts, linking.query_texts, strict=True)) & \
        set(zip(linking.index_concepts, linking.index_texts, strict=True))
    fast = build_suite(cfg.eval, ["dev", "kg"], run_dir, fast=True)
    assert fast.names[:3] == ["ehr-rel-a", "minimayosrs-physicians", "minimayosrs-coders"]
    results = fast.run(minilm)
    for name in ("kg-linking", "kg-definitions"):
        r = results[name]
        assert r["n_queries"] <= cfg.eval.fast_max_queries
        assert r["n_index_concepts"] <= max(cfg.eval.fast_index_concepts, 2 * r["n_queries"])
        assert 0 < r["acc@1"] <= r["acc@5"] <= 1 and r["acc@1"] <= r["mrr@10"] <= r["acc@5"]
    assert results["kg-hierarchy"]["n_pairs"] <= 2 * cfg.eval.fast_max_pairs
    assert results["kg-hierarchy"]["roc_auc"] > 0.6  # real names: parents are closer
    assert 0 < main_score(results) < 1


def test_translation_task_scores_like_sentence_transformers_translation_evaluator(minilm):
    from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

    # Glossary pairs in Dutch, one translation repeated (a duplicated string counts as found
    # wherever it is, as in TranslationEvaluator).
    rows = [r for r in csv.DictReader(open(DISEASE_GLOSSARY), delimiter="\t")
            if r["language"] == "nl"][:40]
    english = [r["source"] for r in rows] + ["mellitus diabetes"]
    dutch = [r["target"] for r in rows] + [rows[0]["target"]]
    teacher = minilm.encode(english, normalize_embeddings=True)
    found = TranslationTask("translation-nl", english, dutch, teacher).run(
        minilm, Embedder(minilm))
    expected = TranslationEvaluator(english, dutch, name="nl", write_csv=False)(minilm)
    assert found["src2trg"] == pytest.approx(expected["nl_src2trg_accuracy"])
    assert found["trg2src"] == pytest.approx(expected["nl_trg2src_accuracy"])
    assert found["accuracy"] == pytest.approx(expected["nl_mean_accuracy"])
    assert 0 < found["accuracy"] < 1 and found["n_pairs"] == 41
    dutch_vectors = minilm.encode(dutch, normalize_embeddings=True)
    assert found["mse"] == pytest.approx(float(np.mean((dutch_vectors - teacher) ** 2)),
                                         rel=1e-4)


def test_ray_data_actors_embed_like_the_local_model(ray_local, minilm):
    texts = [f"{a} {i}" for i, (a, _) in enumerate(PAIRS * 20)]
    local = Embedder(minilm)(texts)
    on_ray = Embedder(minilm, sentence_model_dir(MINILM), batch_size=16, ray_min_texts=1)(texts)
    assert on_ray.shape == local.shape == (120, 384)
    np.testing.assert_allclose(on_ray, local, atol=1e-5)


def _evaluate(*args):
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_evaluate_job_compares_models_and_writes_report(tmp_path):
    # A platform checkpoint keeps its exported model in model/.
    shutil.copytree(sentence_model_dir(MINILM), tmp_path / "ckpt" / "model")
    sts = tmp_path / "dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{a}\t{b}\t{i}\n" for i, (a, b) in enumerate(PAIRS)))
    stsb = tmp_path / "sts-dev.csv"  # the STS Benchmark's layout: no header, 7 fields
    stsb.write_text("".join(f'main-news\theadlines\t2015\t{i:04d}\t{i}\t" {a}\t{b} "\n'
                            for i, (a, b) in enumerate(PAIRS)))
    result = _evaluate(MINILM, tmp_path / "ckpt", "--suite", "dev", "--fast",
                       "--benchmark", f"sts={sts}", "--benchmark", f"stsb={stsb}",
                       "--out", tmp_path / "out", "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(report["models"]) == ["all-MiniLM-L6-v2", "ckpt"]
    assert report["benchmarks"] == ["ehr-rel-a", "minimayosrs-physicians",
                                    "minimayosrs-coders", "sts", "stsb"]
    base, ckpt = (report["models"][m]["benchmarks"] for m in report["models"])
    # The stsb file is general-language: beside the biomedical mean, not in it.
    assert [n for n, r in base.items() if r["domain"] == "general"] == ["stsb"]
    assert base["stsb"]["n_pairs"] == 6
    assert report["models"]["all-MiniLM-L6-v2"]["score"] == pytest.approx(
        np.mean([r["spearman"] for n, r in base.items() if n != "stsb"]))
    for name, metrics in base.items():
        assert set(metrics) >= {"spearman", "pearson", "n_pairs", "n_skipped"}
        assert metrics["spearman"] == pytest.approx(ckpt[name]["spearman"], abs=1e-6)
    assert base["ehr-rel-a"]["n_pairs"] == 111
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| all-MiniLM-L6-v2 |" in table and "ehr-rel-a (spearman)" in table
    assert "| sts (spearman) | biomedical mean | general STS: stsb (spearman) |" in table
    assert (tmp_path / "out" / "results.png").read_bytes()[:4] == b"\x89PNG"

    bad = _evaluate(MINILM, "--suite", "dev", "--benchmark", f"umnsrs={sts}")
    assert bad.returncode != 0
    assert "--benchmark 'umnsrs=" in bad.stderr and "umnsrs-sim" in bad.stderr
