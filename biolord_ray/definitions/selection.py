"""Which concepts get a definition when ``definitions.max_concepts`` caps them.

The paper defined 400k of UMLS's millions of concepts: a capped run (a CPU run, a GPU budget)
should spend its answers where a definition adds most. Policy ``fewest_texts`` orders the
candidates by

1. no human definition first,
2. fewest texts (preferred name + English synonyms + definitions): a concept with little
   text to train on gains most from one more,
3. a seeded hash of the concept id (``keys.draw``), so ties are drawn across the whole KG
   instead of one id range; the id itself last makes the order total,

and keeps the first ``max_concepts``. The order is total, so a larger cap keeps everything a
smaller one chose (a rerun with a larger cap generates only the new concepts).

The key is computed per batch and the candidates sorted by Ray Data's distributed sort, then
limited: no process holds the KG. Without a cap nothing is sorted.
"""

from __future__ import annotations

import pyarrow as pa

from biolord_ray.config import DefinitionsConfig
from biolord_ray.keys import draw

# Sort keys, all ascending (False sorts before True).
ORDER = ["has_human_definition", "texts", "draw", "concept_id"]
_KEY_COLUMNS = ORDER[:3]


def selection_key(batch: pa.Table, seed: int) -> pa.Table:
    """``batch`` (CONCEPT_SCHEMA rows) with the ordering columns of ``ORDER`` added."""
    has_definition, texts, draws = [], [], []
    for concept_id, synonyms, definitions in zip(
            batch["concept_id"].to_pylist(), batch["synonyms"].to_pylist(),
            batch["definitions"].to_pylist(), strict=True):
        english_synonyms = sum(s["language"] == "en" for s in synonyms or [])
        has_definition.append(bool(definitions))
        texts.append(1 + english_synonyms + len(definitions or []))
        draws.append(draw(seed, concept_id))
    return batch.append_column("has_human_definition", pa.array(has_definition, pa.bool_())) \
        .append_column("texts", pa.array(texts, pa.int32())) \
        .append_column("draw", pa.array(draws, pa.float64()))


def select_concepts(candidates, cfg: DefinitionsConfig):
    """The candidates (a Ray Dataset of concepts) that ``cfg`` chooses to define."""
    if cfg.max_concepts is None:
        return candidates
    return candidates.map_batches(selection_key, batch_format="pyarrow",
                                  fn_kwargs={"seed": cfg.selection_seed}) \
        .sort(ORDER).limit(cfg.max_concepts).drop_columns(_KEY_COLUMNS)
