"""Metrics, benchmark files and the report table, checked against values worked out by hand
(no model needed)."""

import json
import math
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.fs as pafs
import pytest

from biolord_ray.cli import save_report
from biolord_ray.evaluation import metrics
from biolord_ray.evaluation.benchmark_files import BUNDLED, GENERAL, EvalFormatError, load_pairs
from biolord_ray.evaluation.report import markdown, write_report
from biolord_ray.evaluation.suite import SimilarityTask, main_score
from biolord_ray.run_dir import RunDir

# The STS Benchmark dev split lives beside the repository (its texts keep their sources'
# licences, so it is never copied in): <repo>/../shared/data/eval/.
STSB_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval" / "stsb-dev.tsv"


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


def test_stsb_dev_split_read_intact():
    pairs = load_pairs("stsb", STSB_DEV, "stsb")
    assert (len(pairs.scores), pairs.n_skipped, pairs.domain) == (1500, 0, GENERAL)
    assert (pairs.texts1[0], pairs.texts2[0], pairs.scores[0]) == (
        "a man with a hard hat is dancing .", "a man wearing a hard hat is dancing .", 5.0)
    assert (pairs.texts1[-1], pairs.texts2[-1], pairs.scores[-1]) == (
        "new video shows us police officers beating mentally-ill man",
        "new york police officer critically wounded in hatchet attack", 0.0)
    # Quotes are text: an unbalanced one (line 1004) and one opening a field (line 757) do
    # not swallow the lines after them, as CSV quoting would (it reads 1470 rows).
    assert (pairs.texts1[1003], pairs.texts2[1003], pairs.scores[1003]) == (
        'rt jones analyst juli niemann said grant was " the one we were all pulling for .',
        'he has a very good reputation , " rt jones analyst juli niemann said of grant .', 1.4)
    assert pairs.texts1[756].startswith('" what i am really looking for is an estimation')
    assert pairs.texts2[756] == ("the following is taken from my dog-eared copy of the new "
                                 "penguin atlas of medieval history .")
    assert sum('"' in a or '"' in b for a, b in zip(pairs.texts1, pairs.texts2,
                                                      strict=True)) == 110
    assert (min(pairs.scores), max(pairs.scores)) == (0.0, 5.0)
    assert SimilarityTask("stsb", pairs).domain == GENERAL


def test_stsb_rows_with_an_empty_sentence_are_skipped(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_text("main-news\theadlines\t2015\t0001\t4.0\ta cat sits .\ta cat is sitting .\n"
                    "main-news\theadlines\t2015\t0002\t1.5\t \tan empty first text\n\n"
                    "main-forums\tdeft-forum\t2014\t0003\t0.5\the said \" no .\tit rained .\n")
    pairs = load_pairs("stsb-test", path, "stsb")
    assert pairs.texts1 == ["a cat sits .", 'he said " no .']
    assert (pairs.scores, pairs.n_skipped) == ([4.0, 0.5], 1)


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
    ("g\tf\t2012\t1\t5.0\ta\tb\ng\tf\t2012\t2\t4.0\ta\n", "stsb", ".tsv",
     r"x\.tsv:2: 6 fields, expected 7 \(STS Benchmark TSV without a header"),
    ("g\tf\t2012\t1\thigh\ta\tb\n", "stsb", ".tsv",
     r"x\.tsv:1: score 'score' is 'high', expected a number"),
    ("\n", "stsb", ".tsv", r"x\.tsv: empty file; expected STS Benchmark TSV without a header"),
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


# ---------------------------------------------------------------------------------------
# The report table

def _result(kind, value, domain=None):
    metric = {"similarity": "spearman", "retrieval": "acc@1"}[kind]
    result = {"kind": kind, "main_metric": metric, metric: value}
    if domain:  # results.json written before domains were recorded have none
        result["domain"] = domain
    return result


def _report(with_general=True):
    scores = {"base": (0.40, 0.90, 0.82), "trained": (0.50, 0.96, 0.79)}
    models = {}
    for label, (ehr, linking, stsb) in scores.items():
        benchmarks = {"ehr-rel-a": _result("similarity", ehr, "biomedical"),
                      "stsb": _result("similarity", stsb, GENERAL),
                      "kg-linking": _result("retrieval", linking)}
        if not with_general:
            del benchmarks["stsb"]
        models[label] = {"spec": label, "benchmarks": benchmarks,
                         "score": main_score(benchmarks)}
    return {"fast": False, "benchmarks": list(models["base"]["benchmarks"]),
            "models": models}


def test_general_sts_column_beside_the_biomedical_mean(tmp_path):
    report = _report()
    # Model selection leaves general STS out: the mean of EHR-Rel and linking only.
    assert report["models"]["base"]["score"] == pytest.approx((0.40 + 0.90) / 2)
    table = markdown(report)
    assert ("| model | ehr-rel-a (spearman) | kg-linking (acc@1) | biomedical mean | "
            "general STS: stsb (spearman) |") in table
    assert "| base | 0.4000 | 0.9000 | 0.6500 | 0.8200 |" in table
    assert "| trained | 0.5000 | 0.9600 | 0.7300 | 0.7900 |" in table
    assert "not averaged into it" in table and "to select checkpoints" in table
    assert "\n## stsb\n" in table  # its own metrics section, as every benchmark
    paths = write_report(report, tmp_path)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_report_without_a_general_benchmark_keeps_its_mean():
    report = _report(with_general=False)
    table = markdown(report)
    assert "| model | ehr-rel-a (spearman) | kg-linking (acc@1) | mean |" in table
    assert "| base | 0.4000 | 0.9000 | 0.6500 |" in table
    assert "general STS" not in table and "biomedical mean" not in table


def test_main_score_of_general_benchmarks_alone():
    only_general = {"stsb": _result("similarity", 0.8, GENERAL),
                    "stsb-test": _result("similarity", 0.6, GENERAL)}
    assert main_score(only_general) == pytest.approx(0.7)
    assert "| base | - | 0.8000 | 0.6000 |" in markdown(
        {"models": {"base": {"spec": "x", "benchmarks": only_general}}})


# ---------------------------------------------------------------------------------------
# Where biolord-ray evaluate (jobs/evaluate.py) writes the report

class InMemoryRunDir(RunDir):
    """A run directory on a filesystem that is not the local one, as S3's is, with paths
    like S3's ("bucket/run/..."); fsspec's in-memory filesystem needs no network (pyarrow
    builds no such filesystem from a URI)."""

    def __init__(self, root: str):
        self.uri, self.root = f"memory://{root}", root
        self.fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
        self.fs.create_dir(root, recursive=True)


def test_evaluate_job_writes_into_a_remote_run_directory_not_the_working_one(
        tmp_path, monkeypatch):
    report = _report()
    monkeypatch.chdir(tmp_path)
    bucket = f"bucket-{tmp_path.name}"  # the in-memory store is shared by the process
    run_dir = InMemoryRunDir(f"{bucket}/run")
    try:
        locations = save_report(report, None, run_dir)
        assert locations == {kind: f"memory://{bucket}/run/evaluation/results.{ext}"
                             for kind, ext in [("json", "json"), ("markdown", "md"),
                                               ("png", "png")]}
        with run_dir.fs.open_input_stream(f"{bucket}/run/evaluation/results.json") as f:
            assert json.loads(f.read())["models"]["trained"]["benchmarks"]["ehr-rel-a"] \
                == {"kind": "similarity", "main_metric": "spearman", "spearman": 0.5,
                    "domain": "biomedical"}
        with run_dir.fs.open_input_stream(f"{bucket}/run/evaluation/results.md") as f:
            assert f.read().decode() == markdown(report)
        with run_dir.fs.open_input_stream(f"{bucket}/run/evaluation/results.png") as f:
            assert f.read(4) == b"\x89PNG"
        assert list(tmp_path.iterdir()) == []  # nothing under the working directory
    finally:
        run_dir.fs.delete_dir(bucket)

    # --out wins, as a URI (file:// resolves through pyarrow as s3:// does) or a local path
    # (relative to the working directory, as the user typed it).
    uri = save_report(report, f"file://{tmp_path}/by-uri", run_dir)
    assert uri["json"] == f"file://{tmp_path}/by-uri/results.json"
    local = save_report(report, "by-path", run_dir)
    assert local["markdown"] == f"{tmp_path}/by-path/results.md"
    for folder in ("by-uri", "by-path"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == \
            ["results.json", "results.md", "results.png"]
