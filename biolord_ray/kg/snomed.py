"""SNOMED CT RF2 snapshot reader: concepts, descriptions, text definitions, relationships and
the language reference set, streamed with Ray Data.

RF2 files are tab-delimited with a header line and no quoting. Column orders follow the
SNOMED CT Release File Specifications. Only active rows count (``active`` == "1").

Extensions (``kg.extensions``) are read with the release: their files join the release's,
so an extension's descriptions (e.g. a national translation) become names of the concepts
the release defines. File names may carry an extension's name before "Snapshot"
(``sct2_Description_SpanishExtensionSnapshot-es_INT_...``).
"""

from __future__ import annotations

import glob
import os
import re

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.config import KGSource
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import IS_A, RELATION_SCHEMA, iso_languages
from biolord_ray.kg.tables import (
    KGTables,
    assemble_concepts,
    facts_table,
    located_read_errors,
    read_delimited,
)

CONCEPT = ["id", "effectiveTime", "active", "moduleId", "definitionStatusId"]
DESCRIPTION = ["id", "effectiveTime", "active", "moduleId", "conceptId", "languageCode",
               "typeId", "term", "caseSignificanceId"]
RELATIONSHIP = ["id", "effectiveTime", "active", "moduleId", "sourceId", "destinationId",
                "relationshipGroup", "typeId", "characteristicTypeId", "modifierId"]
LANGUAGE_REFSET = ["id", "effectiveTime", "active", "moduleId", "refsetId",
                   "referencedComponentId", "acceptabilityId"]

CONCEPTS = "sct2_Concept_*Snapshot*"
DESCRIPTIONS = "sct2_Description_*Snapshot*"
DEFINITIONS = "sct2_TextDefinition_*Snapshot*"
RELATIONSHIPS = "sct2_Relationship_*Snapshot*"
LANGUAGES = "der2_cRefset_Language*Snapshot*"
REQUIRED = {CONCEPTS: CONCEPT, DESCRIPTIONS: DESCRIPTION, RELATIONSHIPS: RELATIONSHIP}
OPTIONAL = {DEFINITIONS: DESCRIPTION, LANGUAGES: LANGUAGE_REFSET}
COLUMNS = {**REQUIRED, **OPTIONAL}

SOURCE = "SNOMEDCT"
FSN = "900000000000003001"
SYNONYM = "900000000000013009"
PREFERRED = "900000000000548007"
ACCEPTABLE = "900000000000549004"
IS_A_TYPE = "116680003"
# "Diabetes mellitus (disorder)" -> name "Diabetes mellitus", semantic tag "disorder".
SEMANTIC_TAG = r"^(?P<name>.*?)\s*\((?P<tag>[^()]+)\)\s*$"


def release_files(path: str, required: bool = True) -> dict[str, list[str]]:
    """RF2 snapshot files by pattern, found under the release root, its Snapshot folder or
    any folder holding them; every required pattern must match at least one file (for an
    extension, ``required=False``: at least one file of any pattern)."""
    if not os.path.isdir(path):
        raise KGFormatError(path, "not a directory (an RF2 release must be a directory)")
    snapshot = os.path.join(path, "Snapshot")
    root = snapshot if os.path.isdir(snapshot) else path
    found = {}
    for pattern in COLUMNS:
        matches = sorted(p for p in glob.glob(os.path.join(root, "**", pattern), recursive=True)
                         if os.path.isfile(p))
        if matches:
            found[pattern] = matches
    if not required and not found:
        raise KGFormatError(root, "no RF2 snapshot file in this SNOMED CT extension (files "
                            f"matching {', '.join(COLUMNS)})")
    missing = [pattern for pattern in REQUIRED if pattern not in found] if required else []
    if missing:
        raise KGFormatError(root, f"not a SNOMED CT RF2 snapshot: no file matching "
                            f"{', '.join(missing)} (kg.path must be the release root, its "
                            f"Snapshot folder or a folder holding the RF2 snapshot files)")
    return found


def check_header(path: str, columns: list[str]) -> None:
    """Raise unless the first line of ``path`` names exactly ``columns``."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        header = first.decode("utf-8-sig").rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        header = None
    if header != columns:
        expected = "\t".join(columns)
        raise KGFormatError(path, f"not the expected RF2 header: expected {expected!r}, "
                            f"got {first[:200]!r}", 1)


def read(cfg: KGSource, work_dir: str, fs, num_partitions: int = 16) -> KGTables:
    """The release's concepts (assembled now, into ``work_dir`` on ``fs``) and relations (a
    lazy dataset); ``num_partitions``: of the language refset join, and the fewest buckets
    to assemble concepts in."""
    files = release_files(cfg.path)
    for extension in cfg.extensions:
        for pattern, paths in release_files(extension, required=False).items():
            files[pattern] = files.get(pattern, []) + paths
    for pattern, paths in files.items():
        for path in paths:
            check_header(path, COLUMNS[pattern])
    located = [(p, "\t", len(COLUMNS[pattern]), True)
               for pattern, paths in files.items() for p in paths]
    languages = iso_languages(cfg.languages)

    def rf2(pattern: str, keep: list[str]):
        return read_delimited(files[pattern], COLUMNS[pattern], keep, "\t", header=True)

    # A list, not a union: each file's read fuses with the bucketing (buckets.Keyed).
    facts = [rf2(CONCEPTS, ["id", "active"]).map_batches(
        concepts_to_facts, batch_format="pyarrow")]

    descriptions = rf2(DESCRIPTIONS, ["id", "active", "conceptId", "languageCode", "typeId",
                                      "term"]).map_batches(
        select_descriptions, batch_format="pyarrow", fn_kwargs={"languages": languages})
    if LANGUAGES in files:
        members = rf2(LANGUAGES, ["active", "refsetId", "referencedComponentId",
                                  "acceptabilityId"]).map_batches(
            select_refset_members, batch_format="pyarrow",
            fn_kwargs={"refset_id": cfg.snomed_language_refset})
        descriptions = descriptions.join(members, "left_outer", num_partitions=num_partitions,
                                         on=("id",))
    facts.append(descriptions.map_batches(descriptions_to_facts, batch_format="pyarrow"))

    if DEFINITIONS in files:
        facts.append(rf2(DEFINITIONS, ["active", "conceptId", "languageCode",
                                       "term"]).map_batches(
            definitions_to_facts, batch_format="pyarrow", fn_kwargs={"languages": languages}))

    relationships = rf2(RELATIONSHIPS, ["active", "sourceId", "destinationId", "typeId"])
    # The relationship types are few (about a hundred attributes): their names are collected
    # now, and broadcast to the tasks that rename relationships. Collecting runs a read, so it
    # gets its failures located here (the caller locates those of the lazy datasets).
    with located_read_errors(located):
        type_names = relation_type_names(relationships, rf2(DESCRIPTIONS, [
            "active", "conceptId", "languageCode", "typeId", "term"]))
    relations = relationships.map_batches(relations_from_rf2, batch_format="pyarrow",
                                          fn_kwargs={"type_names": type_names})
    concepts = assemble_concepts(facts, work_dir, fs, located, concept_files=files[CONCEPTS],
                                 minimum_buckets=num_partitions)
    return KGTables(concepts=concepts, relations=relations, files=located)


def relation_type_names(relationships, descriptions) -> dict[str, str]:
    """Relation name for each typeId used by an active relationship, from its FSN."""
    # Distinct per batch, then on the driver: Dataset.unique would shuffle for a few ids.
    type_ids = sorted({r["typeId"] for r in relationships.map_batches(
        active_type_ids, batch_format="pyarrow").take_all()} - {IS_A_TYPE})
    if not type_ids:
        return {}
    fsns = descriptions.map_batches(select_fsns, batch_format="pyarrow",
                                    fn_kwargs={"concept_ids": type_ids}).take_all()
    # An English FSN wins over FSNs of other languages (an extension may translate them).
    fsns.sort(key=lambda r: (r["languageCode"] != "en", r["term"]))
    names = {}
    for r in fsns:
        names.setdefault(r["conceptId"], relation_name(r["term"]))
    return names


def relation_name(fsn: str) -> str:
    """"Finding site (attribute)" -> "finding_site"."""
    name = re.sub(r"\s*\([^()]*\)\s*$", "", fsn)
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def concepts_to_facts(batch: pa.Table) -> pa.Table:
    ids = batch.filter(pc.equal(batch["active"], "1"))["id"]
    return facts_table({"concept_id": ids, "kind": "concept"})


def select_descriptions(batch: pa.Table, languages: list[str]) -> pa.Table:
    """Active FSNs and synonyms in one of ``languages``."""
    keep = pc.and_(pc.equal(batch["active"], "1"), pc.and_(
        pc.is_in(batch["languageCode"], pa.array(languages)),
        pc.is_in(batch["typeId"], pa.array([FSN, SYNONYM]))))
    return batch.filter(keep).select(["id", "conceptId", "languageCode", "typeId", "term"])


def select_refset_members(batch: pa.Table, refset_id: str) -> pa.Table:
    """Active members of the configured language refset: description id -> acceptability."""
    b = batch.filter(pc.and_(pc.equal(batch["active"], "1"),
                             pc.equal(batch["refsetId"], refset_id)))
    return pa.table({"id": b["referencedComponentId"], "acceptabilityId": b["acceptabilityId"]})


def descriptions_to_facts(batch: pa.Table) -> pa.Table:
    """Descriptions (joined with their acceptability, if any) -> name and semantic type facts.

    Rank: the synonym the language refset prefers (0), synonyms it accepts (1), the FSN without
    its semantic tag (2), synonyms outside the refset (3), names in languages other than
    English (4). Without a refset file the FSN is thus the preferred name: it is unambiguous
    by design, an arbitrary synonym is not. Names in other languages are typed
    "other_language" (the English phases leave them out; the multilingual stages pair them).
    """
    if "acceptabilityId" in batch.column_names:
        acceptability = pc.fill_null(batch["acceptabilityId"], "")
    else:
        acceptability = pa.array([""] * batch.num_rows, pa.string())
    is_fsn = pc.equal(batch["typeId"], FSN)
    parts = pc.extract_regex(batch["term"], SEMANTIC_TAG)
    has_tag = pc.and_(is_fsn, pc.is_valid(parts))
    text = pc.if_else(has_tag, pc.struct_field(parts, "name"), batch["term"])
    english = pc.equal(batch["languageCode"], "en")
    english_tag = pc.and_(has_tag, english)  # "(trastorno)" is not another semantic type
    rank = pc.if_else(pc.invert(english), 4, pc.if_else(is_fsn, 2, pc.if_else(
        pc.equal(acceptability, PREFERRED), 0,
        pc.if_else(pc.equal(acceptability, ACCEPTABLE), 1, 3))))
    names = facts_table({"concept_id": batch["conceptId"], "kind": "name", "text": text,
                         "type": pc.if_else(pc.invert(english), "other_language",
                                            pc.if_else(is_fsn, "fully_specified", "exact")),
                         "language": batch["languageCode"], "source": SOURCE, "rank": rank})
    tagged = batch.filter(english_tag)
    tags = facts_table({"concept_id": tagged["conceptId"], "kind": "semantic_type",
                        "text": pc.struct_field(parts.filter(english_tag), "tag")})
    return pa.concat_tables([names, tags])


def definitions_to_facts(batch: pa.Table, languages: list[str]) -> pa.Table:
    b = batch.filter(pc.and_(pc.and_(pc.equal(batch["active"], "1"),
                                     pc.is_in(batch["languageCode"], pa.array(languages))),
                             pc.greater(pc.utf8_length(batch["term"]), 0)))
    return facts_table({"concept_id": b["conceptId"], "kind": "definition", "text": b["term"],
                        "source": SOURCE})


def active_type_ids(batch: pa.Table) -> pa.Table:
    active = batch.filter(pc.equal(batch["active"], "1"))["typeId"]
    return pa.table({"typeId": pc.unique(active)})


def select_fsns(batch: pa.Table, concept_ids: list[str]) -> pa.Table:
    keep = pc.and_(pc.and_(pc.equal(batch["active"], "1"), pc.equal(batch["typeId"], FSN)),
                   pc.is_in(batch["conceptId"], pa.array(concept_ids, pa.string())))
    return batch.filter(keep).select(["conceptId", "languageCode", "term"])


def relations_from_rf2(batch: pa.Table, type_names: dict[str, str]) -> pa.Table:
    """Active relationships -> (sourceId, relation, destinationId): "A is_a B" for the
    hierarchy, the type's FSN in snake_case otherwise ("attribute_<typeId>" if it has none)."""
    b = batch.filter(pc.equal(batch["active"], "1"))
    names = {IS_A_TYPE: IS_A, **type_names}
    named = pc.take(pa.array(list(names.values()), pa.string()),
                    pc.index_in(b["typeId"], pa.array(list(names), pa.string())))
    relation = pc.coalesce(named, pc.binary_join_element_wise("attribute_", b["typeId"], ""))
    return pa.Table.from_arrays(
        [b["sourceId"], relation, b["destinationId"], pa.array([SOURCE] * b.num_rows, pa.string())],
        schema=RELATION_SCHEMA).combine_chunks()
