"""The one Arrow schema every KG reader produces (written as Parquet in the run directory)."""

import pyarrow as pa

# Synonym types, normalised across sources (OBO scopes, UMLS TTY/LAT, SNOMED CT type ids).
SYNONYM_TYPES = ("exact", "related", "broad", "narrow", "abbreviation", "fully_specified",
                 "other_language", "other")

SYNONYM = pa.struct([
    ("text", pa.string()),
    ("type", pa.string()),       # one of SYNONYM_TYPES
    ("language", pa.string()),   # ISO 639-1 where known ("en"), else the source's code
    ("source", pa.string()),     # vocabulary the name comes from (UMLS SAB, "SNOMEDCT", "MONDO")
])

DEFINITION = pa.struct([
    ("text", pa.string()),
    ("source", pa.string()),     # who wrote it: a vocabulary (MSH, NCI, HPO, ...); LLM ones later
])

CONCEPT_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("preferred_name", pa.string()),
    ("preferred_name_language", pa.string()),   # as SYNONYM.language ("en" for English)
    ("synonyms", pa.list_(SYNONYM)),            # excludes the preferred name itself
    ("definitions", pa.list_(DEFINITION)),
    ("semantic_types", pa.list_(pa.string())),  # UMLS STY, SNOMED CT semantic tag, OBO namespace
    ("source_vocabularies", pa.list_(pa.string())),
    # Cross-references as CURIEs with normalised prefixes (see ``curie``): OBO xref tags, UMLS
    # source codes of the kg.merge_on vocabularies, and the ids of concepts merged into this
    # one ("hpo:HP:0000822"). Null in runs ingested before the column existed.
    ("xrefs", pa.list_(pa.string())),
])

RELATION_SCHEMA = pa.schema([
    ("head_id", pa.string()),
    ("relation", pa.string()),   # "is_a" for hierarchy; attribute names in snake_case
    ("tail_id", pa.string()),
    ("source", pa.string()),
])

IS_A = "is_a"

# UMLS language codes (LAT) -> ISO 639-1, for the languages the paper's multilingual model
# covers and a few more; other codes are kept lower-cased.
UMLS_LANGUAGES = {"ENG": "en", "SPA": "es", "FRE": "fr", "GER": "de", "DUT": "nl",
                  "DAN": "da", "SWE": "sv", "ITA": "it", "POR": "pt", "NOR": "no",
                  "FIN": "fi", "CZE": "cs", "POL": "pl", "RUS": "ru", "JPN": "ja",
                  "CHI": "zh", "KOR": "ko", "TUR": "tr"}


def iso_language(code: str) -> str:
    """A UMLS LAT code ("SPA") or an ISO 639-1 code ("es") -> the ISO code the schema uses."""
    return UMLS_LANGUAGES.get(code, code.lower())


def iso_languages(codes: list[str]) -> list[str]:
    """``kg.languages`` as ISO codes (English when it is empty, as the UMLS reader reads it)."""
    return sorted({iso_language(code) for code in codes or ["en"]})


# Cross-reference prefixes spelled several ways across sources -> one spelling, so that
# "SNOMEDCT_US:38341003" (HPO), "SCTID:38341003" (MONDO) and a SNOMED CT concept's own id meet.
XREF_PREFIXES = {"UMLS_CUI": "UMLS", "SNOMEDCT_US": "SNOMEDCT", "SCTID": "SNOMEDCT",
                 "SNOMED": "SNOMEDCT", "SNOMEDCT_2010_1_31": "SNOMEDCT", "MSH": "MESH",
                 "NCI": "NCIT", "HPO": "HP", "MDR": "MEDDRA"}


def curie(prefix: str, local: str) -> str:
    """A cross-reference with its prefix normalised: ("snomedct_us", "38341003") ->
    "SNOMEDCT:38341003"; a local part that repeats the prefix ("HP:0000822") is kept once."""
    prefix = XREF_PREFIXES.get(prefix.upper(), prefix.upper())
    head, sep, rest = local.partition(":")
    if sep and XREF_PREFIXES.get(head.upper(), head.upper()) == prefix:
        local = rest
    return f"{prefix}:{local}"


def parse_curie(text: str) -> str | None:
    """An xref as written in a source ("UMLS:C0020538") -> its normalised CURIE, or None
    when it has no prefix (a URL or free text is not a cross-reference to merge on)."""
    prefix, sep, local = text.strip().partition(":")
    if not sep or not prefix or not local or local.startswith("//") or " " in prefix:
        return None
    return curie(prefix, local)
