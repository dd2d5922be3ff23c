"""UMLS Metathesaurus (RRF) reader: MRCONSO, MRDEF, MRSTY and MRREL, streamed with Ray Data.

RRF files are pipe-delimited with a trailing ``|`` (one empty field more than the columns),
no header and no quoting. Column orders follow the UMLS Reference Manual.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.config import KGSource
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import IS_A, RELATION_SCHEMA, curie, iso_language
from biolord_ray.kg.tables import KGTables, assemble_concepts, facts_table, read_delimited

MRCONSO = ["CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI", "SDUI",
           "SAB", "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF"]
MRDEF = ["CUI", "AUI", "ATUI", "SATUI", "SAB", "DEF", "SUPPRESS", "CVF"]
MRSTY = ["CUI", "TUI", "STN", "STY", "ATUI", "CVF"]
MRREL = ["CUI1", "AUI1", "STYPE1", "REL", "CUI2", "AUI2", "STYPE2", "RELA", "RUI", "SRUI",
         "SAB", "SL", "RG", "DIR", "SUPPRESS", "CVF"]
REQUIRED = {"MRCONSO.RRF": MRCONSO, "MRREL.RRF": MRREL}
OPTIONAL = {"MRDEF.RRF": MRDEF, "MRSTY.RRF": MRSTY}

# SUPPRESS: O obsolete, E suppressed by an editor, Y suppressible by the source; N keeps.
SUPPRESSED = ["O", "E", "Y"]
# Term types (TTY) that are abbreviations or acronyms.
ABBREVIATION_TTYS = ["AB", "ACR", "AA", "AM", "ABX", "CA2", "CA3", "OAM", "OA"]
# MRREL REL values kept as facts about a concept (with their RELA when present). PAR/CHD
# is the hierarchy (kept once, as is_a); SIB, SY, AQ, QB, XR and RL say little about meaning.
ATTRIBUTE_RELS = ["RO", "RB", "RN", "RQ"]


def release_files(path: str) -> dict[str, str]:
    """The RRF files of a release directory (META/ or its parent); required ones must exist."""
    meta = os.path.join(path, "META") if os.path.isdir(os.path.join(path, "META")) else path
    found = {name: os.path.join(meta, name) for name in (*REQUIRED, *OPTIONAL)
             if os.path.isfile(os.path.join(meta, name))}
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise KGFormatError(meta, f"not a UMLS release: missing {', '.join(missing)} "
                            f"(kg.path must be the META directory holding the .RRF files)")
    return found


def read(cfg: KGSource, work_dir: str, fs, num_partitions: int = 16,
         xref_namespaces: list[str] = ()) -> KGTables:
    """The release's concepts (assembled now, into ``work_dir`` on ``fs``) and relations (a
    lazy dataset); ``num_partitions``: the fewest buckets to assemble in.

    ``xref_namespaces``: the atoms' source codes in these namespaces (kg.merge_on, e.g.
    SNOMEDCT or HP) become the concept's xrefs, so that other sources can merge with it."""
    files = release_files(cfg.path)
    columns = {**REQUIRED, **OPTIONAL}
    options = {"languages": cfg.languages, "vocabularies": cfg.vocabularies,
               "keep_suppressed": cfg.keep_suppressed}

    def rrf(name: str, keep: list[str]):
        return read_delimited(files[name], columns[name] + ["_end"], keep, "|", header=False)

    # A list, not a union: each file's read fuses with the bucketing (buckets.Keyed).
    facts = [rrf("MRCONSO.RRF", ["CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "TTY", "CODE",
                                 "STR", "SUPPRESS"]).map_batches(
        names_to_facts, batch_format="pyarrow",
        fn_kwargs={**options, "xref_namespaces": [n.upper() for n in xref_namespaces]})]
    if "MRDEF.RRF" in files:
        facts.append(rrf("MRDEF.RRF", ["CUI", "SAB", "DEF", "SUPPRESS"]).map_batches(
            definitions_to_facts, batch_format="pyarrow", fn_kwargs=options))
    if "MRSTY.RRF" in files:
        facts.append(rrf("MRSTY.RRF", ["CUI", "STY"]).map_batches(
            semantic_types_to_facts, batch_format="pyarrow"))
    relations = rrf("MRREL.RRF", ["CUI1", "REL", "CUI2", "RELA", "SAB", "SUPPRESS"]).map_batches(
        relations_from_mrrel, batch_format="pyarrow", fn_kwargs=options)
    located = [(p, "|", len(columns[n]) + 1, False) for n, p in files.items()]
    concepts = assemble_concepts(facts, work_dir, fs, located, minimum_buckets=num_partitions)
    return KGTables(concepts=concepts, relations=relations, files=located)


def _keep(batch: pa.Table, vocabularies: list[str], keep_suppressed: bool) -> pa.Array:
    mask = pa.array([True] * batch.num_rows)
    if not keep_suppressed and "SUPPRESS" in batch.column_names:
        mask = pc.and_(mask, pc.invert(pc.is_in(batch["SUPPRESS"], pa.array(SUPPRESSED))))
    if vocabularies:
        mask = pc.and_(mask, pc.is_in(batch["SAB"], pa.array(vocabularies)))
    return mask


def names_to_facts(batch: pa.Table, languages: list[str], vocabularies: list[str],
                   keep_suppressed: bool, xref_namespaces: list[str] = ()) -> pa.Table:
    kept = _keep(batch, vocabularies, keep_suppressed)
    names = _name_facts(batch.filter(pc.and_(kept, pc.is_in(batch["LAT"],
                                                          pa.array(languages or ["ENG"])))))
    if not xref_namespaces or "CODE" not in batch.column_names:
        return names
    return pa.concat_tables([names, _xref_facts(batch.filter(kept), xref_namespaces)])


def _xref_facts(b: pa.Table, namespaces: list[str]) -> pa.Table:
    """Each atom's source code as a CURIE ("SNOMEDCT_US", "38341003" -> SNOMEDCT:38341003),
    for the codes in ``namespaces``; written once per code, whatever the atom's language."""
    sabs = pc.unique(b["SAB"]).to_pylist()  # a few dozen per batch: normalise those
    wanted = [sab for sab in sabs if curie(sab, "x").split(":")[0] in namespaces]
    b = b.filter(pc.and_(pc.is_in(b["SAB"], pa.array(wanted, pa.string())),
                         pc.not_equal(b["CODE"], "NOCODE")))
    xrefs = [curie(sab, code) for sab, code in zip(b["SAB"].to_pylist(), b["CODE"].to_pylist(),
                                                  strict=True)]
    return facts_table({"concept_id": b["CUI"], "kind": "xref", "text": pa.array(xrefs,
                                                                                pa.string())})


def _name_facts(b: pa.Table) -> pa.Table:
    english = pc.equal(b["LAT"], "ENG")
    # The UMLS preferred name of a CUI is its English atom with TS=P, STT=PF, ISPREF=Y.
    preferred = pc.and_(english, pc.and_(pc.equal(b["TS"], "P"), pc.and_(
        pc.equal(b["STT"], "PF"), pc.equal(b["ISPREF"], "Y"))))
    abbreviation = pc.is_in(b["TTY"], pa.array(ABBREVIATION_TTYS))
    # Fallback order when no atom is the UMLS preferred one: English full names (ISPREF=Y
    # first), then English abbreviations, then other languages.
    rank = pc.if_else(preferred, 0, pc.if_else(
        pc.and_(english, pc.invert(abbreviation)),
        pc.if_else(pc.equal(b["ISPREF"], "Y"), 1, 2), pc.if_else(english, 3, 4)))
    name_type = pc.if_else(pc.invert(english), "other_language",
                           pc.if_else(abbreviation, "abbreviation", "exact"))
    codes = pc.unique(b["LAT"])  # a handful per batch: map those, not every row
    iso = pa.array([iso_language(c) for c in codes.to_pylist()], pa.string())
    language = pc.take(iso, pc.index_in(b["LAT"], codes))
    return facts_table({"concept_id": b["CUI"], "kind": "name", "text": b["STR"],
                        "type": name_type, "language": language, "source": b["SAB"],
                        "rank": rank})


def definitions_to_facts(batch: pa.Table, languages: list[str], vocabularies: list[str],
                         keep_suppressed: bool) -> pa.Table:
    b = batch.filter(pc.and_(_keep(batch, vocabularies, keep_suppressed),
                             pc.greater(pc.utf8_length(batch["DEF"]), 0)))
    return facts_table({"concept_id": b["CUI"], "kind": "definition", "text": b["DEF"],
                        "source": b["SAB"]})


def semantic_types_to_facts(batch: pa.Table) -> pa.Table:
    return facts_table({"concept_id": batch["CUI"], "kind": "semantic_type",
                        "text": batch["STY"]})


def relations_from_mrrel(batch: pa.Table, languages: list[str], vocabularies: list[str],
                         keep_suppressed: bool) -> pa.Table:
    """MRREL rows -> (head, relation, tail).

    MRREL reads "CUI2 is REL/RELA of CUI1": a PAR row says CUI2 is a parent of CUI1, so it
    becomes (CUI1, is_a, CUI2); CHD rows mirror PAR rows and are dropped. Attribute rows
    become (CUI2, RELA, CUI1), RELA being stated from CUI2's side.
    """
    b = batch.filter(pc.and_(_keep(batch, vocabularies, keep_suppressed),
                             pc.not_equal(batch["CUI1"], batch["CUI2"])))
    parents = b.filter(pc.equal(b["REL"], "PAR"))
    attributes = b.filter(pc.and_(pc.is_in(b["REL"], pa.array(ATTRIBUTE_RELS)),
                                  pc.greater(pc.utf8_length(b["RELA"]), 0)))
    return pa.concat_tables([
        pa.Table.from_arrays([parents["CUI1"], pa.array([IS_A] * parents.num_rows, pa.string()),
                              parents["CUI2"], parents["SAB"]], schema=RELATION_SCHEMA),
        pa.Table.from_arrays([attributes["CUI2"], attributes["RELA"], attributes["CUI1"],
                              attributes["SAB"]], schema=RELATION_SCHEMA),
    ]).combine_chunks()
