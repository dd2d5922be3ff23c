"""The SNOMED CT RF2 reader on a small snapshot release in the real RF2 layout."""

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from biolord_ray.config import DefinitionsConfig, KGConfig
from biolord_ray.definitions.prompts import prompt_dataset
from biolord_ray.kg import snomed
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.tables import located_read_errors

RELEASE = Path(__file__).parents[1] / "fixtures" / "snomed" / "SnomedCT_TestRF2_20250101"
TERMINOLOGY = Path("Snapshot") / "Terminology"
CONCEPT_FILE = TERMINOLOGY / "sct2_Concept_Snapshot_INT_20250101.txt"
DESCRIPTION_FILE = TERMINOLOGY / "sct2_Description_Snapshot-en_INT_20250101.txt"
RELATIONSHIP_FILE = TERMINOLOGY / "sct2_Relationship_Snapshot_INT_20250101.txt"


@pytest.fixture(scope="module", autouse=True)
def ray_session(ray_local):
    """Every test here may start Ray work: share the session's Ray instance (conftest)."""


def read(cfg, num_partitions=2):
    """``snomed.read``, its concepts assembled in a fresh folder."""
    return snomed.read(cfg, tempfile.mkdtemp(prefix="snomed_concepts_"),
                       pafs.LocalFileSystem(), num_partitions=num_partitions)


def read_all(path):
    """Read a release as the ingest stage does: executing inside located_read_errors."""
    tables = read(KGConfig(format="snomed", path=str(path), languages=["en"]))
    with located_read_errors(tables.files):
        concepts = {c["concept_id"]: c for c in tables.concepts.take_all()}
        relations = tables.relations.take_all()
    return concepts, relations


@pytest.fixture(scope="module")
def release(ray_session):
    return read_all(RELEASE)


@pytest.fixture
def copy(tmp_path):
    return Path(shutil.copytree(RELEASE, tmp_path / RELEASE.name))


def synonyms(concept):
    return {(s["text"], s["type"]) for s in concept["synonyms"]}


def test_concepts(release):
    concepts, _ = release
    diabetes = concepts["73211009"]
    assert diabetes["preferred_name"] == "Diabetes mellitus"
    # The FSN without its tag equals the preferred name, so only the other synonym remains;
    # the Spanish description is outside kg.languages.
    assert synonyms(diabetes) == {("DM - Diabetes mellitus", "exact")}
    assert diabetes["semantic_types"] == ["disorder"]
    assert diabetes["source_vocabularies"] == ["SNOMEDCT"]
    assert [d["source"] for d in diabetes["definitions"]] == ["SNOMEDCT"]
    assert diabetes["definitions"][0]["text"].startswith("A metabolic disorder")

    type2 = concepts["44054006"]
    # "Type II diabetes mellitus" was preferred by a refset row that is now inactive, and
    # "Maturity onset diabetes" is an inactive description.
    assert type2["preferred_name"] == "Type 2 diabetes mellitus"
    assert synonyms(type2) == {("Type II diabetes mellitus", "exact"),
                               ("Diabetes mellitus type 2", "fully_specified")}
    # Only the active one of its two text definitions.
    assert len(type2["definitions"]) == 1

    # US English prefers "Pancreatic structure", GB English "Pancreas structure".
    assert concepts["15776009"]["preferred_name"] == "Pancreatic structure"
    assert concepts["15776009"]["semantic_types"] == ["body structure"]
    assert concepts["363698007"]["semantic_types"] == ["attribute"]
    assert concepts["38341003"]["preferred_name"] == "Hypertensive disorder"

    # 190388001 is inactive (its descriptions are active, as they often are in RF2).
    assert "190388001" not in concepts
    assert len(concepts) == 13


def test_relations(release):
    _, relations = release
    triples = {(r["head_id"], r["relation"], r["tail_id"]) for r in relations}
    assert ("44054006", "is_a", "73211009") in triples
    assert ("73211009", "is_a", "44054006") not in triples
    assert ("73211009", "finding_site", "15776009") in triples
    # Inactive relationship.
    assert ("44054006", "is_a", "64572001") not in triples
    # A type without a description in the release, pointing to a concept outside it (the
    # ingest stage drops dangling relations, not the reader).
    assert ("46635009", "attribute_370135005", "99123451000124106") in triples
    assert {r["source"] for r in relations} == {"SNOMEDCT"}
    assert len(relations) == len(triples) == 17


def test_relation_name():
    assert snomed.relation_name("Finding site (attribute)") == "finding_site"
    assert snomed.relation_name("Has active ingredient (attribute)") == "has_active_ingredient"
    assert snomed.relation_name("Part of (attribute)") == "part_of"


def test_without_language_refset_the_fsn_is_preferred(copy):
    shutil.rmtree(copy / "Snapshot" / "Refset")
    # kg.path may also be the folder holding the files.
    concepts, _ = read_all(copy / TERMINOLOGY)
    type2 = concepts["44054006"]
    assert type2["preferred_name"] == "Diabetes mellitus type 2"
    assert synonyms(type2) == {("Type 2 diabetes mellitus", "exact"),
                               ("Type II diabetes mellitus", "exact")}


def test_release_files_from_root_snapshot_or_folder():
    for path in (RELEASE, RELEASE / "Snapshot", RELEASE / TERMINOLOGY):
        files = snomed.release_files(str(path))
        assert [os.path.basename(p) for p in files[snomed.CONCEPTS]] == [CONCEPT_FILE.name]
    assert snomed.LANGUAGES in snomed.release_files(str(RELEASE))
    assert snomed.LANGUAGES not in snomed.release_files(str(RELEASE / TERMINOLOGY))


def test_extension_files_may_name_the_extension_and_need_not_be_complete(tmp_path):
    # The Spanish Edition names its files sct2_Description_SpanishExtensionSnapshot-es_...
    name = "sct2_Description_SpanishExtensionSnapshot-es_INT_20250101.txt"
    shutil.copy(RELEASE / DESCRIPTION_FILE, tmp_path / name)
    files = snomed.release_files(str(tmp_path), required=False)
    assert [os.path.basename(p) for p in files[snomed.DESCRIPTIONS]] == [name]
    with pytest.raises(KGFormatError, match="not a SNOMED CT RF2 snapshot"):
        snomed.release_files(str(tmp_path))
    (tmp_path / name).unlink()
    with pytest.raises(KGFormatError, match="no RF2 snapshot file in this SNOMED CT extension"):
        snomed.release_files(str(tmp_path), required=False)


def test_names_in_other_languages_rank_after_english_and_add_no_semantic_type():
    # An edition's Spanish FSN and synonym beside the English FSN (no language refset).
    batch = pa.table({
        "conceptId": ["73211009"] * 3, "languageCode": ["en", "es", "es"],
        "typeId": [snomed.FSN, snomed.FSN, snomed.SYNONYM],
        "term": ["Diabetes mellitus (disorder)", "diabetes mellitus (trastorno)", "diabetes"]})
    facts = snomed.descriptions_to_facts(batch).to_pylist()
    assert [(f["text"], f["type"], f["language"], f["rank"]) for f in facts
            if f["kind"] == "name"] == [
        ("Diabetes mellitus", "fully_specified", "en", 2),
        ("diabetes mellitus", "other_language", "es", 4),
        ("diabetes", "other_language", "es", 4)]
    assert [f["text"] for f in facts if f["kind"] == "semantic_type"] == ["disorder"]


def test_missing_required_file(copy):
    (copy / RELATIONSHIP_FILE).unlink()
    with pytest.raises(KGFormatError, match=r"sct2_Relationship_\*Snapshot\*") as err:
        read(KGConfig(format="snomed", path=str(copy)))
    assert err.value.path == str(copy / "Snapshot")


def test_wrong_header(copy):
    path = copy / CONCEPT_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("id\teffectiveTime\tactive\tmoduleId\r\n" + "".join(lines[1:]))
    with pytest.raises(KGFormatError, match="definitionStatusId") as err:
        read(KGConfig(format="snomed", path=str(copy)))
    assert (err.value.path, err.value.line) == (str(path), 1)


def damage_line(path, number, damage):
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = damage(lines[number - 1])
    path.write_bytes(b"".join(lines))


def test_truncated_row(copy):
    path = copy / CONCEPT_FILE
    damage_line(path, 5, lambda line: line.split(b"\t")[0] + b"\t2002\r\n")
    with pytest.raises(KGFormatError, match="expected 5 fields") as err:
        read_all(copy)
    assert (err.value.path, err.value.line) == (str(path), 5)


def test_undecodable_byte(copy):
    path = copy / DESCRIPTION_FILE
    damage_line(path, 7, lambda line: line.replace(b"Disease", b"Dis\xffease"))
    with pytest.raises(KGFormatError, match="not valid UTF-8") as err:
        read_all(copy)
    assert (err.value.path, err.value.line) == (str(path), 7)


# Raised inside a Ray task (the groupby), so this also checks KGFormatError survives pickling.
def test_duplicate_concept_id(copy):
    path = copy / CONCEPT_FILE
    with open(path, "ab") as f:
        f.write(b"73211009\t20250101\t1\t900000000000207008\t900000000000074008\r\n")
    with pytest.raises(KGFormatError, match="duplicate concept id 73211009") as err:
        read_all(copy)
    assert err.value.path == str(path)
    assert err.value.line == 5
    assert "txt line 5, " in str(err.value) and "txt line 16)" in str(err.value)


def test_definition_prompts_from_snomed_facts(tmp_path):
    tables = read(KGConfig(format="snomed", path=str(RELEASE), languages=["en"]))
    with located_read_errors(tables.files):  # read once: both prompt datasets use them
        concepts, relations = tables.concepts.materialize(), tables.relations.materialize()
    prompts = {r["concept_id"]: r for r in
               prompt_dataset(concepts, relations, DefinitionsConfig(only_missing=False),
                              str(tmp_path / "all"), pafs.LocalFileSystem(), 2).take_all()}
    assert len(prompts) == 13
    diabetes = prompts["73211009"]["user_prompt"]
    assert "- also called: DM - Diabetes mellitus\n- semantic type: disorder\n" in diabetes
    assert "- finding site: Pancreatic structure\n" in diabetes
    type2 = prompts["44054006"]["user_prompt"]
    assert '"Type 2 diabetes mellitus"' in type2
    assert "- also called: Diabetes mellitus type 2; Type II diabetes mellitus\n" in type2
    assert "- is a kind of: Diabetes mellitus\n" in type2
    # The attribute whose target is outside the release gives no fact (no name to show).
    assert "attribute_370135005" not in prompts["46635009"]["user_prompt"]
    only_missing = prompt_dataset(concepts, relations, DefinitionsConfig(only_missing=True),
                                  str(tmp_path / "missing"), pafs.LocalFileSystem(),
                                  2).take_all()
    assert {r["concept_id"] for r in only_missing} == {
        cid for cid, r in prompts.items() if not r["has_definition"]}
    # Facts still name related concepts that have a definition.
    assert {r["concept_id"]: r["user_prompt"] for r in only_missing} == {
        r["concept_id"]: prompts[r["concept_id"]]["user_prompt"] for r in only_missing}
