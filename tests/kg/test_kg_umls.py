import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from biolord_ray.config import DefinitionsConfig, load_config
from biolord_ray.definitions.prompts import prompt_dataset
from biolord_ray.kg import ingest, umls
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.run_dir import RunDir

UMLS = Path(__file__).parents[1] / "fixtures" / "umls"


def _ingest(tmp_path, path=UMLS, *overrides):
    cfg = load_config(None, ["kg.format=umls", f"kg.path={path}", "kg.max_concepts=null",
                             "kg.shuffle_partitions=2", f"run_dir={tmp_path / 'run'}",
                             *overrides])
    run_dir = RunDir(cfg.run_dir)
    record = ingest.run(cfg, run_dir)
    return record, run_dir


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ray_local):
    record, run_dir = _ingest(tmp_path_factory.mktemp("umls"), UMLS,
                              "kg.languages=[ENG, DUT]")
    concepts = {r["concept_id"]: r for r in ingest.read_concepts(run_dir).to_pylist()}
    relations = ingest.read_relations(run_dir).to_pylist()
    return record, concepts, relations, run_dir


def test_concepts_from_mrconso_mrdef_mrsty(ingested):
    _, concepts, _, _ = ingested
    # C9999999 has only German and Spanish names: filtered out by kg.languages.
    assert sorted(concepts) == ["C0007222", "C0011849", "C0011854", "C0011860", "C0012634",
                                "C0018787", "C0020538", "C0030274"]
    dm = concepts["C0011849"]
    assert dm["preferred_name"] == "Diabetes Mellitus"  # TS=P, STT=PF, ISPREF=Y
    assert {s["text"] for s in dm["synonyms"]} == {"DM", "Diabetes mellitus"}
    assert {"text": "DM", "type": "abbreviation", "language": "en", "source": "MTH"} \
        in dm["synonyms"]
    assert [d["source"] for d in dm["definitions"]] == ["MSH", "NCI"]
    assert dm["semantic_types"] == ["Disease or Syndrome"]
    t2 = concepts["C0011860"]
    assert {"text": "Diabetes mellitus type 2", "type": "other_language", "language": "nl",
            "source": "MSHDUT"} in t2["synonyms"]
    # Suppressed atom (SUPPRESS=O) and suppressed definition are dropped.
    assert "Diabetes, old style" not in {s["text"] for s in dm["synonyms"]}
    assert len(concepts["C0020538"]["definitions"]) == 1


def test_relations_from_mrrel(ingested):
    record, _, relations, _ = ingested
    triples = {(r["head_id"], r["relation"], r["tail_id"]) for r in relations}
    assert triples == {
        ("C0011860", "is_a", "C0011849"), ("C0011854", "is_a", "C0011849"),
        ("C0020538", "is_a", "C0007222"), ("C0007222", "is_a", "C0012634"),
        ("C0011849", "is_a", "C0012634"),
        ("C0011849", "has_finding_site", "C0030274"), ("C0030274", "finding_site_of", "C0011849"),
    }
    # PAR stated by MSH and by SNOMEDCT_US is one relation.
    assert len(relations) == len(triples)
    assert record["counts"]["dangling_relations"] == 1  # the parent C8888888 is not in MRCONSO
    assert record["counts"]["concepts"] == 8 and record["counts"]["relations"] == 7


def test_definition_prompts_from_umls_facts(ingested, tmp_path):
    import ray.data

    _, _, _, run_dir = ingested
    cfg = DefinitionsConfig(only_missing=False)
    prompts = prompt_dataset(
        ray.data.read_parquet(run_dir.output(ingest.STAGE, "concepts")),
        ray.data.read_parquet(run_dir.output(ingest.STAGE, "relations")), cfg,
        str(tmp_path), pafs.LocalFileSystem(), 2)
    rows = {r["concept_id"]: r for r in prompts.take_all()}
    assert len(rows) == 8
    dm = rows["C0011849"]
    assert dm["system_prompt"] == cfg.system_prompt and dm["has_definition"]
    assert dm["user_prompt"] == (
        'Write a definition of the biomedical concept "Diabetes Mellitus" in one or two '
        "sentences (about 40 to 60 words). Facts from a knowledge graph:\n"
        "- also called: Diabetes mellitus; DM\n"
        "- semantic type: Disease or Syndrome\n"
        "- is a kind of: Disease\n"
        "- has finding site: Pancreas\n"
        "Answer with the definition only.")
    assert dm["concept_terms"] == ["Diabetes Mellitus", "Diabetes mellitus", "DM", "Disease",
                                   "Pancreas"]
    # The Dutch name is another language, not a synonym to show the English prompt.
    assert "Diabetes mellitus type 2" not in rows["C0011860"]["user_prompt"]
    assert "- is a kind of: Diabetes Mellitus\n" in rows["C0011860"]["user_prompt"]


def test_vocabulary_filter(tmp_path, ray_local):
    _, run_dir = _ingest(tmp_path, UMLS, "kg.vocabularies=[SNOMEDCT_US]")
    concepts = {r["concept_id"]: r for r in ingest.read_concepts(run_dir).to_pylist()}
    assert sorted(concepts) == ["C0011849", "C0020538"]
    assert concepts["C0020538"]["preferred_name"] == "Hypertensive disorder"


@pytest.mark.parametrize("damage, line, message", [
    (lambda text: text.replace("|Type 2 Diabetes|0|N|256|", "|Type 2 Diabetes|0|"), 8,
     "expected 19 fields separated by '\\|', got 17"),
    (lambda text: text.replace("Heart", "H\udcffeart"), 13, "byte 66 is not valid UTF-8"),
])
def test_malformed_mrconso_names_file_and_line(tmp_path, ray_local, damage, line, message):
    meta = tmp_path / "META"
    shutil.copytree(UMLS / "META", meta)
    path = meta / "MRCONSO.RRF"
    path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.raises(KGFormatError, match=rf"MRCONSO\.RRF, line {line}: {message}"):
        _ingest(tmp_path, meta)
    run_dir = RunDir(str(tmp_path / "run"))
    assert run_dir.stage_record("ingest_kg")["status"] == "failed"
    assert not run_dir.exists("ingest_kg")  # nothing partial where a later stage would read


def test_missing_required_file(tmp_path):
    (tmp_path / "MRCONSO.RRF").write_text("")
    with pytest.raises(KGFormatError, match="not a UMLS release: missing MRREL.RRF"):
        umls.release_files(str(tmp_path))


def test_concepts_are_assembled_from_facts_with_arrow_kernels():
    """The block assembly behind the UMLS and SNOMED CT readers, on hand-made facts in shuffled
    order: the preferred name is the first by rank, a (text, language) is one synonym (a
    cognate in another language is another), definitions keep their first (text, source)
    in the facts' order, types/vocabularies/xrefs are sorted and distinct, and a concept
    without a name is dropped."""
    from biolord_ray.kg.tables import concepts_from_facts, facts_table

    rows = [  # (concept, kind, text, type, language, source, rank)
        ("C1", "definition", "Raised pressure.", "", "", "NCI", 0),
        ("C1", "name", "hypertension", "exact", "en", "SCT", 1),
        ("C2", "semantic_type", "T047", "", "", "", 0),
        ("C1", "semantic_type", "T047", "", "", "", 0),
        ("C1", "name", "Hypertension", "exact", "fr", "MSHFRE", 2),
        ("C1", "name", "Hypertension", "exact", "en", "NCI", 3),
        ("C0", "name", "Zeta", "exact", "en", "MSH", 0),
        ("C1", "definition", "High BP.", "", "", "MSH", 0),
        ("C1", "name", "Hypertension", "exact", "en", "MSH", 0),
        ("C1", "definition", "Raised pressure.", "", "", "NCI", 0),
        ("C1", "semantic_type", "T033", "", "", "", 0),
        ("C1", "xref", "SNOMEDCT:38341003", "", "", "", 0),
        ("C1", "semantic_type", "T047", "", "", "", 0),
    ]
    columns = ["concept_id", "kind", "text", "type", "language", "source", "rank"]
    concepts = concepts_from_facts(facts_table(
        {c: [row[i] for row in rows] for i, c in enumerate(columns)})).to_pylist()
    assert [c["concept_id"] for c in concepts] == ["C0", "C1"]
    assert concepts[0]["preferred_name"] == "Zeta" and concepts[0]["synonyms"] == []
    c1 = concepts[1]
    assert (c1["preferred_name"], c1["preferred_name_language"]) == ("Hypertension", "en")
    assert c1["synonyms"] == [
        {"text": "hypertension", "type": "exact", "language": "en", "source": "SCT"},
        {"text": "Hypertension", "type": "exact", "language": "fr", "source": "MSHFRE"}]
    assert c1["definitions"] == [{"text": "Raised pressure.", "source": "NCI"},
                                 {"text": "High BP.", "source": "MSH"}]
    assert c1["semantic_types"] == ["T033", "T047"]
    assert c1["source_vocabularies"] == ["MSH", "MSHFRE", "NCI", "SCT"]
    assert c1["xrefs"] == ["SNOMEDCT:38341003"]
    with pytest.raises(KGFormatError, match="duplicate concept id C1"):
        concepts_from_facts(facts_table({c: [r[i] for r in rows + [
            ("C1", "concept", "", "", "", "", 0)] * 2] for i, c in enumerate(columns)}),
            concept_files=[__file__])
