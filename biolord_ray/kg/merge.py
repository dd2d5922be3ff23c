"""Several KG sources in one run: namespaced ids, and concepts that sources say are the same
merged into one.

Ids: in a multi-source KG every concept id becomes ``<source name>:<id>`` ("hpo:HP:0000822",
"umls:C0020538"), so two sources' ids cannot collide whatever their formats.

Merging (``kg.merge_on``, e.g. ``[UMLS]``): a concept's *keys* are the CURIEs in those
namespaces that name it: its own id when its source's ids are in that namespace (a UMLS CUI
is UMLS:<CUI>, a SNOMED CT id SNOMEDCT:<id>, an OBO id its CURIE) and its cross-references
(OBO ``xref`` tags, UMLS source codes). Concepts of different sources that share a key are
one concept. Only unambiguous statements merge:

* a key held by two concepts of one source does not say which of them is meant: it links
  nothing (counted ``ambiguous_merge_keys``);
* a group of linked concepts holding two concepts of one source (through different keys) is
  not merged (``merge_conflicts``): a source's own concepts are distinct by its own word.

A merged concept keeps the id of its member from the earliest source in ``kg.sources``; its
names, definitions, semantic types, vocabularies and cross-references are the union of its
members' (the others' preferred names become synonyms, their ids cross-references), and every
relation of a member is rewritten to it. Ray Data end to end except the union-find, which runs
on the driver over the links only (at most one per concept of the smaller sources).
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.kg.schema import CONCEPT_SCHEMA, RELATION_SCHEMA, curie, parse_curie

log = logging.getLogger(__name__)

KEY_SCHEMA = pa.schema([("key", pa.string()), ("concept_id", pa.string()),
                        ("source", pa.string())])
LINK_SCHEMA = pa.schema([("first", pa.string()), ("second", pa.string()),
                         ("ambiguous", pa.bool_())])
MERGES_SCHEMA = pa.schema([("concept_id", pa.string()), ("merged_id", pa.string())])


# ---------------------------------------------------------------------------------------
# Ids

def namespace_concepts(batch: pa.Table, name: str) -> pa.Table:
    return batch.set_column(0, "concept_id", _prefixed(batch["concept_id"], name))


def namespace_relations(batch: pa.Table, name: str) -> pa.Table:
    for column in ("head_id", "tail_id"):
        batch = batch.set_column(batch.schema.get_field_index(column), column,
                                 _prefixed(batch[column], name))
    return batch


def _prefixed(ids, name: str):
    return pc.binary_join_element_wise(pa.scalar(name), ids, ":")


def split_id(concept_id: str) -> tuple[str, str]:
    """A namespaced id -> (source name, the source's own id)."""
    source, _, local = concept_id.partition(":")
    return source, local


def own_key(fmt: str, local_id: str) -> str | None:
    """The CURIE a source's own id is known by elsewhere (None: not a CURIE)."""
    if fmt == "umls":
        return curie("UMLS", local_id)
    if fmt == "snomed":
        return curie("SNOMEDCT", local_id)
    return parse_curie(local_id)  # OBO-family ids are CURIEs already ("HP:0000822")


# ---------------------------------------------------------------------------------------
# Links: concepts of different sources sharing a key

def concept_keys(batch: pa.Table, formats: dict[str, str], namespaces: list[str]) -> pa.Table:
    """(key, concept_id, source) for every key in ``namespaces`` a concept holds."""
    wanted = {n.upper() for n in namespaces}
    rows = {name: [] for name in KEY_SCHEMA.names}
    for concept_id, xrefs in zip(batch["concept_id"].to_pylist(), batch["xrefs"].to_pylist(),
                                 strict=True):
        source, local = split_id(concept_id)
        keys = {own_key(formats[source], local), *(xrefs or [])}
        for key in sorted(k for k in keys if k and k.split(":", 1)[0] in wanted):
            rows["key"].append(key)
            rows["concept_id"].append(concept_id)
            rows["source"].append(source)
    return pa.table(rows, schema=KEY_SCHEMA)


def key_links(group: pa.Table, order: dict[str, int]) -> pa.Table:
    """One key's holders -> links from the earliest source's concept to the others', or one
    ``ambiguous`` row when a source holds the key twice."""
    holders = sorted(set(zip(group["source"].to_pylist(), group["concept_id"].to_pylist(),
                             strict=True)), key=lambda h: (order[h[0]], h[1]))
    sources = [source for source, _ in holders]
    if len(set(sources)) < 2:
        return LINK_SCHEMA.empty_table()
    if len(set(sources)) < len(sources):
        return pa.table({"first": [""], "second": [""], "ambiguous": [True]}, schema=LINK_SCHEMA)
    first = holders[0][1]
    return pa.table({"first": [first] * (len(holders) - 1),
                     "second": [cid for _, cid in holders[1:]],
                     "ambiguous": [False] * (len(holders) - 1)}, schema=LINK_SCHEMA)


def merge_groups(links: list[tuple[str, str]], order: dict[str, int]
                 ) -> tuple[dict[str, str], int]:
    """Union-find over the links -> ({member id: kept id} for every member of a merged group,
    kept ids included), and the number of groups left unmerged for holding two concepts of
    one source."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for member in parent:
        groups.setdefault(find(member), []).append(member)
    into, conflicts = {}, 0
    for members in groups.values():
        sources = [split_id(m)[0] for m in members]
        if len(set(sources)) < len(sources):
            conflicts += 1
            continue
        kept = min(members, key=lambda m: order[split_id(m)[0]])
        into.update({m: kept for m in members})
    return into, conflicts


# ---------------------------------------------------------------------------------------
# Applying the merge

def tag_groups(batch: pa.Table, members: pa.Array, kept: pa.Array) -> pa.Table:
    """Add ``_group``: the kept id of the concept's merged group, or "" when it has none."""
    index = pc.index_in(batch["concept_id"], value_set=members)
    return batch.append_column("_group", pc.fill_null(pc.take(kept, index), ""))


def merge_rows(group: pa.Table, order: dict[str, int]) -> pa.Table:
    """The rows of one merged group (all with the same ``_group``) -> one concept row."""
    rows = sorted(group.drop_columns(["_group"]).to_pylist(),
                  key=lambda r: order[split_id(r["concept_id"])[0]])
    kept = rows[0]
    # The preferred name: the earliest source's, unless only a later one has an English name.
    named = next((r for r in rows if r["preferred_name_language"] == "en"), kept)
    seen = {(named["preferred_name"], named["preferred_name_language"])}
    synonyms, definitions, seen_definitions = [], [], set()
    for row in rows:
        vocabulary = (row["source_vocabularies"] or [split_id(row["concept_id"])[0]])[0]
        own_name = {"text": row["preferred_name"], "language": row["preferred_name_language"],
                    "type": "exact" if row["preferred_name_language"] == "en"
                    else "other_language", "source": vocabulary}
        for synonym in [own_name, *(row["synonyms"] or [])]:
            if (synonym["text"], synonym["language"]) not in seen:
                seen.add((synonym["text"], synonym["language"]))
                synonyms.append(synonym)
        for definition in row["definitions"] or []:
            if (definition["text"], definition["source"]) not in seen_definitions:
                seen_definitions.add((definition["text"], definition["source"]))
                definitions.append(definition)
    merged = {
        "concept_id": kept["concept_id"],
        "preferred_name": named["preferred_name"],
        "preferred_name_language": named["preferred_name_language"],
        "synonyms": synonyms,
        "definitions": definitions,
        "semantic_types": sorted({t for r in rows for t in r["semantic_types"] or []}),
        "source_vocabularies": sorted({v for r in rows for v in r["source_vocabularies"] or []}),
        "xrefs": sorted({x for r in rows for x in r["xrefs"] or []}
                        | {r["concept_id"] for r in rows[1:]}),
    }
    return pa.Table.from_pylist([merged], schema=CONCEPT_SCHEMA)


def remap_relations(batch: pa.Table, members: pa.Array, kept: pa.Array) -> pa.Table:
    """Relations of merged concepts point at the kept id; a relation between two members of
    one group would now be a loop, and is dropped."""
    for column in ("head_id", "tail_id"):
        ids = batch[column]
        moved = pc.take(kept, pc.index_in(ids, value_set=members))
        batch = batch.set_column(batch.schema.get_field_index(column), column,
                                 pc.coalesce(moved, ids))
    return batch.filter(pc.not_equal(batch["head_id"], batch["tail_id"])) \
        .select(RELATION_SCHEMA.names).cast(RELATION_SCHEMA)


def merge_concepts(concepts, relations, formats: dict[str, str], namespaces: list[str],
                   num_partitions: int):
    """Merge the concepts that share a key in ``namespaces``. ``formats``: source name ->
    format, in ``kg.sources`` order. Returns (concepts, relations, merges, counts): lazy Ray
    Datasets, the (concept_id, merged_id) table and the merge counts."""
    import ray
    from ray.data.expressions import col

    order = {name: i for i, name in enumerate(formats)}
    links = concepts.map_batches(concept_keys, batch_format="pyarrow",
                                 fn_kwargs={"formats": formats, "namespaces": namespaces}) \
        .groupby("key", num_partitions=num_partitions) \
        .map_groups(key_links, batch_format="pyarrow", fn_kwargs={"order": order}) \
        .to_arrow_refs()
    links = pa.concat_tables([LINK_SCHEMA.empty_table(), *ray.get(links)])
    ambiguous = int(pc.sum(links["ambiguous"]).as_py() or 0)
    links = links.filter(pc.invert(links["ambiguous"]))
    into, conflicts = merge_groups(list(zip(links["first"].to_pylist(),
                                            links["second"].to_pylist(), strict=True)), order)
    merges = pa.table({"concept_id": [into[m] for m in sorted(into) if into[m] != m],
                       "merged_id": [m for m in sorted(into) if into[m] != m]},
                      schema=MERGES_SCHEMA)
    counts = {"merged_concepts": merges.num_rows,
              "merge_groups": len(set(into.values())),
              "merge_conflicts": conflicts, "ambiguous_merge_keys": ambiguous}
    log.info("ingest_kg: merge on %s: %s", namespaces, counts)
    if not into:
        return concepts, relations, merges, counts
    members = pa.array(sorted(into), pa.string())
    kept = pa.array([into[m] for m in members.to_pylist()], pa.string())
    tagged = concepts.map_batches(tag_groups, batch_format="pyarrow",
                                  fn_kwargs={"members": members, "kept": kept})
    alone = tagged.filter(expr=col("_group") == "").drop_columns(["_group"])
    merged = tagged.filter(expr=col("_group") != "") \
        .groupby("_group", num_partitions=num_partitions) \
        .map_groups(merge_rows, batch_format="pyarrow", fn_kwargs={"order": order})
    relations = relations.map_batches(remap_relations, batch_format="pyarrow",
                                      fn_kwargs={"members": members, "kept": kept})
    return alone.union(merged), relations, merges, counts
