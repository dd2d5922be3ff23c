"""Cross-lingual distillation (BioLORD-2023-M) on real data: the UMLS-format fixture's names
in Spanish, French, German and Dutch, and the bundled disease glossary, with the packaged
MiniLM as English teacher and as the student's starting point."""

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from biolord_ray import report, stage_outputs
from biolord_ray.config import DISEASE_GLOSSARY, KGConfig, load_config
from biolord_ray.evaluation import eval_sets
from biolord_ray.kg import ingest, obo, snomed
from biolord_ray.kg.schema import CONCEPT_SCHEMA
from biolord_ray.multilingual import distill_multilingual, parallel_data
from biolord_ray.run_dir import RunDir
from biolord_ray.training import loop

UMLS = Path(__file__).parents[1] / "fixtures" / "umls"
SNOMED = Path(__file__).parents[1] / "fixtures" / "snomed"
MINILM = "packaged:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def umls_run(tmp_path_factory, ray_local):
    """The fixture release ingested with its names in six languages (Italian included), and
    its evaluation sets (which the multilingual stages read)."""
    path = tmp_path_factory.mktemp("multilingual")
    cfg = load_config(None, [
        "kg.format=umls", f"kg.path={UMLS}", "kg.max_concepts=null", "kg.shuffle_partitions=2",
        "kg.languages=[ENG, SPA, FRE, GER, DUT, ITA]", f"run_dir={path / 'run'}",
        f"multilingual.teacher={MINILM}"])
    run_dir = RunDir(cfg.run_dir)
    ingest.run(cfg, run_dir)
    eval_sets.run(cfg, run_dir)
    return cfg, run_dir


def test_kg_pairs_are_the_english_name_with_each_name_in_a_configured_language(umls_run):
    _, run_dir = umls_run
    pairs = parallel_data.kg_pairs(ingest.read_concepts(run_dir), ["es", "fr", "de", "nl"])
    found = {(p["concept_id"], p["language"], p["source"], p["target"])
             for p in pairs.to_pylist() if not p["reason"]}
    assert found == {
        # A name that is the same string in two languages is a pair (a cognate).
        ("C0011849", "es", "Diabetes Mellitus", "Diabetes Mellitus"),
        ("C0011849", "fr", "Diabetes Mellitus", "Diabète"),
        ("C0011860", "nl", "Diabetes Mellitus, Type 2", "Diabetes mellitus type 2"),
        ("C0011860", "es", "Diabetes Mellitus, Type 2", "Diabetes Mellitus Tipo 2"),
        ("C0020538", "es", "Hypertension", "Hipertensión"),
        ("C0020538", "de", "Hypertension", "Hypertonie"),
        ("C0020538", "fr", "Hypertension", "Hypertension"),
        ("C0018787", "es", "Heart", "Corazón"), ("C0018787", "de", "Heart", "Herz"),
        ("C0018787", "fr", "Heart", "Cœur"),
        ("C0030274", "nl", "Pancreas", "Alvleesklier"),
        ("C0012634", "es", "Disease", "Enfermedad"),
    }  # Italian was ingested but not asked for
    assert {p["origin"] for p in pairs.to_pylist()} == {"kg"}
    # C9999999 has a German and a Spanish name, no English one: its pair is not English to
    # Spanish, so it is quarantined.
    assert [(p["concept_id"], p["language"], p["source"], p["target"], p["reason"])
            for p in pairs.to_pylist() if p["reason"]] == [
        ("C9999999", "es", "Nur deutscher Name", "Sin nombre en inglés", "no_english_name")]


def test_english_phases_leave_out_concepts_without_an_english_name(umls_run):
    cfg, run_dir = umls_run
    counts = run_dir.completed(ingest.STAGE)["counts"]
    assert counts["concepts_without_english_name"] == 1
    english = {r["concept_id"] for r in stage_outputs.english_concepts(run_dir).take_all()}
    assert len(english) == counts["concepts"] - 1 and "C9999999" not in english
    names = pq.read_table(run_dir.output(eval_sets.STAGE, "names"))
    assert "C9999999" not in names["concept_id"].to_pylist()
    assert set(names["concept_id"].to_pylist()) <= english


def test_kg_pairs_from_a_snomed_ct_extension(ray_local, tmp_path):
    """The fixture release read with its Dutch extension (the real RF2 layout of a national
    extension: its own module, descriptions and language refset)."""
    cfg = KGConfig(format="snomed", path=str(SNOMED / "SnomedCT_TestRF2_20250101"),
                   extensions=[str(SNOMED / "SnomedCT_TestExtensionNL_NL1000146_20250101")],
                   languages=["en", "nl", "SPA"])
    rows = snomed.read(cfg, str(tmp_path), pafs.LocalFileSystem(),
                       num_partitions=2).concepts.take_all()
    concepts = {c["concept_id"]: c for c in rows}
    # The extension names no new concept (its name of an unknown one is dropped), and the
    # English names stay preferred.
    assert len(concepts) == 13
    assert concepts["38341003"]["preferred_name"] == "Hypertensive disorder"
    assert {(s["text"], s["type"]) for s in concepts["38341003"]["synonyms"]} == {
        ("High blood pressure", "exact"), ("Hypertensive disorder, systemic arterial",
                                           "fully_specified"),
        ("hypertensieve aandoening", "other_language"), ("hoge bloeddruk", "other_language")}
    pairs = parallel_data.kg_pairs(pa.Table.from_pylist(rows, schema=CONCEPT_SCHEMA), ["nl", "es"])
    assert sorted((p["concept_id"], p["language"], p["source"], p["target"])
                  for p in pairs.to_pylist() if not p["reason"]) == [
        ("38341003", "nl", "Hypertensive disorder", "hoge bloeddruk"),
        ("38341003", "nl", "Hypertensive disorder", "hypertensieve aandoening"),
        ("44054006", "nl", "Type 2 diabetes mellitus", "diabetes mellitus type 2"),
        # One string, two languages (the release's Spanish name, the extension's Dutch one).
        ("73211009", "es", "Diabetes mellitus", "diabetes mellitus"),
        ("73211009", "nl", "Diabetes mellitus", "diabetes mellitus"),
        ("80891009", "nl", "Heart structure", "structuur van hart"),
    ]  # the Dutch name of 15776009 is inactive
    assert set(pairs["reason"].to_pylist()) == {""}


def test_kg_pairs_from_language_tagged_obo_synonyms(tmp_path):
    path = tmp_path / "mini.obo"
    path.write_text(
        '[Term]\nid: X:1\nname: asthma\nsynonym: "asthme" EXACT [] {lang="fr"}\n'
        'synonym: "asma" EXACT [] {lang="es"}\nsynonym: "Asthma" EXACT [] {lang="de"}\n'
        'synonym: "bronchial asthma" EXACT []\n\n'
        '[Term]\nid: X:2\nname: heart\nsynonym: "cœur" EXACT [] {lang="fr"}\n')
    concepts, _, _ = obo.read_obo(str(path), languages=["en", "fr", "es"])
    pairs = parallel_data.kg_pairs(concepts, ["fr", "es", "de"])
    assert [(p["concept_id"], p["language"], p["source"], p["target"], p["reason"])
            for p in pairs.to_pylist()] == [
        ("X:1", "fr", "asthma", "asthme", ""), ("X:1", "es", "asthma", "asma", ""),
        ("X:2", "fr", "heart", "cœur", "")]  # German was not kept at ingest


def test_parallel_file_rows_are_cleaned_or_quarantined_with_a_reason(tmp_path, ray_local):
    path = tmp_path / "pairs.tsv"
    path.write_text("source\ttarget\tlanguage\n"
                    " Asthma \tasma\tes\n"
                    'Cat "scratch" disease\tenfermedad por arañazo de gato\tes\n'
                    "Heart\t\tfr\n"
                    "\tHerz\tde\n"
                    "Disease\tmalattia\tit\n")
    rows = parallel_data.read_parallel_file(str(path)).map_batches(
        parallel_data.file_pairs, batch_format="pyarrow",
        fn_kwargs={"languages": ["es", "fr", "de"], "origin": str(path)}).take_all()
    assert [(r["source"], r["target"], r["language"], r["reason"]) for r in rows] == [
        ("Asthma", "asma", "es", ""),
        ('Cat "scratch" disease', "enfermedad por arañazo de gato", "es", ""),
        ("Heart", "", "fr", "empty_target"),
        ("", "Herz", "de", "empty_source"),
        ("Disease", "malattia", "it", "language_not_configured")]
    assert all(r["concept_id"] is None and r["origin"] == str(path) for r in rows)


def test_parquet_parallel_file_with_concept_ids(tmp_path, ray_local):
    import pyarrow as pa

    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"concept_id": [73211009, 38341003], "source": ["Diabetes", "HTN"],
                             "target": ["Diabetes", "Hipertensión"],
                             "language": ["es", "es"]}), path)
    rows = parallel_data.read_parallel_file(str(path)).map_batches(
        parallel_data.file_pairs, batch_format="pyarrow",
        fn_kwargs={"languages": ["es"], "origin": str(path)}).take_all()
    assert [(r["concept_id"], r["target"], r["reason"]) for r in rows] == [
        ("73211009", "Diabetes", ""), ("38341003", "Hipertensión", "")]


def test_parallel_file_without_a_required_column_names_file_and_column(tmp_path, ray_local):
    path = tmp_path / "pairs.tsv"
    path.write_text("source\ttranslation\tlanguage\nHeart\tHerz\tde\n")
    with pytest.raises(ValueError, match=rf"{path}: no column\(s\) target"):
        parallel_data.read_parallel_file(str(path))


def test_glossary_is_a_valid_parallel_file():
    with open(DISEASE_GLOSSARY) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 654 and {r["language"] for r in rows} == {"es", "fr", "de", "nl",
                                                                  "da", "sv"}
    assert all(r["concept_id"].startswith("MONDO:") and r["source"] and r["target"]
               for r in rows)


@pytest.mark.slow
def test_student_learns_to_embed_translations_like_the_teacher(umls_run):
    cfg, run_dir = umls_run
    cfg = copy.deepcopy(cfg)
    cfg.eval.suites = []  # the student's evaluation: translation only (added by the stage)
    t = cfg.multilingual.train
    t.max_steps, t.checkpoint_every = 32, 16  # two of the default's three epochs

    record = parallel_data.run(cfg, run_dir)
    counts = record["counts"]
    languages = ["da", "de", "es", "fr", "nl", "sv"]
    assert counts["train_pairs"] + counts["validation_pairs"] == 654 + 12  # glossary + KG
    assert all(counts[f"validation_pairs_{lang}"] > 0 for lang in languages)
    assert counts["quarantined"] == counts["quarantined_no_english_name"] == 1
    rows = pq.read_table(run_dir.output(parallel_data.STAGE, "train")).to_pandas()
    assert (rows["kind"] == "english").sum() == (rows["kind"] == "translation").sum()
    english = rows[rows["kind"] == "english"]
    assert (english["text"] == english["english"]).all()
    vectors = np.stack(rows["target"].map(np.asarray))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # A held-out concept has none of its pairs in training.
    held = set(pq.read_table(run_dir.output(parallel_data.STAGE, "validation"))["concept_id"]
               .to_pylist())
    assert held and not held & set(rows["concept_id"])

    record = distill_multilingual.run(cfg, run_dir)
    history = {int(r["step"]): r for r in
               csv.DictReader(open(run_dir.path(distill_multilingual.STAGE, "history.csv")))}
    # Validations every 16 steps and at each epoch's end (where it falls depends on the data).
    assert min(history) == 0 and max(history) == 32 and 16 in history, sorted(history)
    # Translation accuracy (held-out pairs, mean of the languages) rises over training, and
    # the translations' embeddings come closer to the teacher's.
    scores = [float(history[step][loop.SCORE]) for step in (0, 16, 32)]
    losses = [float(history[step]["val_loss"]) for step in (0, 16, 32)]
    assert scores[0] < min(scores[1:]) and losses[0] > losses[1] > losses[2], history
    results = json.loads((Path(run_dir.path(distill_multilingual.STAGE, "evaluation"))
                          / "results.json").read_text())
    before, after = (results["models"][label]["benchmarks"] for label in
                     (f"student before ({MINILM.removeprefix('packaged:')})", "multilingual"))
    assert sorted(after) == [f"translation-{lang}" for lang in languages]
    assert np.mean([after[t]["accuracy"] for t in after]) > \
        np.mean([before[t]["accuracy"] for t in after])
    assert all(after[t]["mse"] < before[t]["mse"] and 0 <= after[t]["src2trg"] <= 1
               for t in after)
    assert record["counts"]["best_val_score"] > record["counts"]["base_val_score"]
    model = run_dir.path(distill_multilingual.STAGE, "model")
    assert "BioLORD-2023-M" in open(f"{model}/README.md").read()
    assert (Path(run_dir.path(distill_multilingual.STAGE)) / "history.png").stat().st_size > 0

    # The run's report has the student's section.
    report.run(cfg, run_dir, only=[ingest.STAGE, parallel_data.STAGE, distill_multilingual.STAGE])
    readme = (Path(run_dir.path(report.STAGE)) / "README.md").read_text()
    for line in ("## Multilingual student (BioLORD-M)", "| teacher |", "| multilingual |",
                 "\n#### translation-es", "BioLORD-M (multilingual): `"):
        assert line in readme, line


