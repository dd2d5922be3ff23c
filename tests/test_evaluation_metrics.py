"""Metrics and benchmark files, checked against values worked out by hand (no model needed)."""

import json
import math

import numpy as np
import pytest

from biolord_ray.evaluation import metrics
from biolord_ray.evaluation.pairs import BUNDLED, EvalFormatError, load_pairs


def test_spearman_perfect_reversed_and_one_swap():
    gold = [1.0, 2.0, 3.0, 4.0]
    assert metrics.correlations(np.array([0.1, 0.2, 0.3, 0.9]), gold)["spearman"] == 1.0
    assert metrics.correlations(np.array([0.9, 0.3, 0.2, 0.1]), gold)["spearman"] == -1.0
    # One adjacent swap: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    swapped = metrics.correlations(np.array([1.0, 3.0, 2.0, 4.0]), gold)
    assert swapped["spearman"] == pytest.approx(0.8)


def test_pearson_by_hand():
    # x = 1,2,3; y = 1,2,4: cov = 3, |dx| = sqrt(2), |dy| = sqrt(42)/3 -> r = 9 / sqrt(84)
    r = metrics.correlations(np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 4.0])["pearson"]
    assert r == pytest.approx(9 / math.sqrt(84))


def _unit(degrees):
    radians = np.radians(np.atleast_1d(degrees))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_concept_retrieval_ranks_concepts_by_their_best_name():
    # Concept 0 has names at 0 and 90 degrees, concept 1 at 45, concept 2 at 180.
    index = _unit([0, 90, 45, 180])
    owners = np.array([0, 0, 1, 2])
    # 10 deg (gold 0): concept 0 first (its 0-degree name). 40 deg (gold 0): concept 1 is
    # closer (5 deg) than concept 0's best name (40 deg) -> rank 2. 200 deg (gold 1):
    # concept 2 (20 deg), concept 0 (its 90-degree name, 110 deg), concept 1 (155) -> rank 3.
    queries = _unit([10, 40, 200])
    gold = np.array([0, 0, 1])
    result = metrics.concept_retrieval(queries, gold, index, owners)
    assert result["acc@1"] == pytest.approx(1 / 3)
    assert result["acc@5"] == pytest.approx(1.0)
    assert result["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    cut = metrics.concept_retrieval(queries, gold, index, owners, ks=(1, 2), mrr_at=2)
    assert cut["acc@2"] == pytest.approx(2 / 3)
    assert cut["mrr@2"] == pytest.approx((1 + 1 / 2) / 3)


def test_concept_retrieval_in_chunks_matches_one_pass():
    rng = np.random.default_rng(0)
    index = rng.normal(size=(3000, 8))
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    owners = rng.integers(0, 700, size=3000)
    owners[:700] = np.arange(700)  # every concept has a name
    queries = index[rng.integers(0, 3000, size=50)] + rng.normal(scale=0.3, size=(50, 8))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gold = owners[rng.integers(0, 3000, size=50)]
    sims = queries @ index.T
    best = np.full((50, 700), -np.inf)
    np.maximum.at(best, (np.arange(50)[:, None], owners[None, :]), sims)
    rank = (best > best[np.arange(50), gold][:, None]).sum(1) + 1
    result = metrics.concept_retrieval(queries, gold, index, owners)
    assert result["acc@1"] == pytest.approx((rank == 1).mean())
    assert result["acc@5"] == pytest.approx((rank <= 5).mean())
    assert result["mrr@10"] == pytest.approx(np.where(rank <= 10, 1 / rank, 0).mean())


def test_roc_auc_by_hand():
    # Positives 0.9, 0.7; negatives 0.8, 0.6: 3 of the 4 (pos, neg) pairs are ordered right.
    auc = metrics.roc_auc(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    assert auc == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------
# Benchmark files in their real formats

def test_umnsrs_csv_with_quoted_header(tmp_path):
    path = tmp_path / "UMNSRS_similarity.csv"
    path.write_text('"Mean","Stdev","Term1","Term2","CUI1","CUI2"\n'
                    '1565.25,137.25,"Renal failure","Kidney failure","C0035078","C0035078"\n'
                    '300.5,200.0,"Acne","Fever","C0702166","C0015967"\n'
                    '900,100,"","Cough","C0000000","C0010200"\n')
    pairs = load_pairs("umnsrs-sim", path, "umnsrs-sim")
    assert pairs.texts1 == ["Renal failure", "Acne"]
    assert pairs.texts2 == ["Kidney failure", "Fever"]
    assert pairs.scores == [1565.25, 300.5]
    assert pairs.n_skipped == 1  # the empty Term1


def test_mayosrs_json_ehr_rel_and_biosses(tmp_path):
    mayo = tmp_path / "MayoSRS.json"
    mayo.write_text(json.dumps([{"value": 4, "term1": "Heart", "term2": "Myocardium"},
                                {"value": 1.2, "term1": "Stroke", "term2": "Acne"}]))
    assert load_pairs("mayosrs", mayo, "mayosrs").scores == [4.0, 1.2]
    biosses = tmp_path / "biosses.tsv"
    biosses.write_text("sentence1\tsentence2\tscore\nA gene.\tA protein.\t2.5\n"
                       "Cells grow.\tCells divide.\t3.0\n")
    assert load_pairs("biosses", biosses, "biosses").texts2 == ["A protein.", "Cells divide."]
    ehr = load_pairs("ehr-rel-a", *reversed(BUNDLED["ehr-rel-a"]))
    assert len(ehr.scores) == 111 and ehr.n_skipped == 0
    assert (ehr.texts1[0], ehr.texts2[0], ehr.scores[0]) == (
        "Abdominal colic", "Delivery by emergency caesarean section", 0.4)
    for name in ("minimayosrs-physicians", "minimayosrs-coders"):
        assert len(load_pairs(name, *reversed(BUNDLED[name])).scores) == 29


def test_sts_jsonl_with_columns_from_config(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"a": "x ray", "b": "radiograph", "label": 0.9}\n\n'
                    '{"a": "x ray", "b": "banana", "label": 0.1}\n')
    pairs = load_pairs("mysts", path, "sts", text1="a", text2="b", score="label")
    assert pairs.scores == [0.9, 0.1]


@pytest.mark.parametrize("content, preset, suffix, expected", [
    ('"Mean","Stdev","Term1","CUI1"\n1,2,"a","C1"\n', "umnsrs-sim", ".csv",
     r"x\.csv:1: missing column\(s\) 'Term2' in the header"),
    ("", "ehr-rel", ".tsv", r"x\.tsv: empty file; expected a header row"),
    ("sentence1\tsentence2\tscore\na\tb\t1\nc\td\thigh\n", "biosses", ".tsv",
     r"x\.tsv:3: score 'score' is 'high', expected a number"),
    ("sentence1\tsentence2\tscore\na\tb\n", "biosses", ".tsv",
     r"x\.tsv:2: 2 fields, the header has 3"),
    ('[{"value": 1, "term1": "a"}]', "mayosrs", ".json",
     r"x\.json:item 0: missing field 'term2'"),
    ("sentence1,sentence2,score\n,b,1\na,,2\n", "sts", ".csv", r"x\.csv: no usable pairs \(2 rows"),
])
def test_bad_benchmark_files_name_file_line_and_expectation(tmp_path, content, preset, suffix,
                                                            expected):
    path = tmp_path / f"x{suffix}"
    path.write_text(content)
    with pytest.raises(EvalFormatError, match=expected):
        load_pairs("x", path, preset)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark preset 'umnsrs'; known presets: "
                                         "umnsrs-sim, umnsrs-rel"):
        load_pairs("x", tmp_path / "x.csv", "umnsrs")
    with pytest.raises(EvalFormatError, match="no such file"):
        load_pairs("x", tmp_path / "missing.csv", "umnsrs-sim")
