"""Stage ``soup``: the model soup of the distillation trials (BioLORD-2023) and the best single
trial (BioLORD-2023-S).

The ingredients are the ``distill`` stage's trials (Ray Tune's ResultGrid: each trial's best
checkpoint), in order of validation score. Two soups, parameters averaged exactly (float64
sums, one division):

* uniform: the best ``soup.top_k`` trials;
* greedy (Wortsman et al., 2022): start from the best trial, add the next one only if the
  soup's validation score (the fast suite the trials were ranked by) goes up.

``soup.method`` picks the one exported as ``model/``; the best trial is exported as
``model_s/``. ``evaluation/`` scores the teacher, the best trial and both soups on the full
evaluation suite; ``soup.csv``/``soup.png`` show each trial and each greedy step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow.fs as pafs

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.stage_outputs import targets_teacher_dir
from biolord_ray.training import loop

log = logging.getLogger(__name__)

STAGE = stages.SOUP
SINGLE_SUBDIR = "model_s"


# ---------------------------------------------------------------------------------------
# Averaging and selection

class SafetensorsWeights(Mapping):
    """The tensors of one or more ``*.safetensors`` files, read one at a time on access.

    Averaging or comparing a dozen ingredients then holds one tensor of each at once, not a
    dozen models (12 mpnet trials are 5 GB in float32)."""

    def __init__(self, files: list[str]):
        from safetensors import safe_open

        if not files:
            raise ValueError("no *.safetensors weights")
        self._handles = [safe_open(f, framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}

    @classmethod
    def of_model(cls, folder: str) -> SafetensorsWeights:
        """The transformer's weights in a model directory (one file, or a sharded model's)."""
        files = sorted(str(f) for f in Path(folder).glob("*.safetensors"))
        if not files:
            raise ValueError(f"{folder}: no *.safetensors weights")
        return cls(files)

    def __getitem__(self, key: str):
        return self._where[key].get_tensor(key)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def average_state_dicts(states: list[Mapping]) -> dict:
    """Parameter-wise mean of state dicts with the same keys and shapes.

    Floating tensors are summed in float64 and divided once, then cast back; other tensors
    (integer buffers such as position ids) must be equal in every ingredient. Works key by
    key, so lazily read states (``SafetensorsWeights``) cost one tensor each at a time."""
    import torch

    if not states:
        raise ValueError("nothing to average")
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"ingredient {i} has different parameters: "
                             f"{sorted(keys ^ set(state))[:5]}")
    averaged = {}
    for key in states[0]:
        first = states[0][key]
        if first.is_floating_point():
            total = first.to(torch.float64, copy=True)
            for state in states[1:]:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(first.dtype)
        else:
            if any(not torch.equal(state[key], first) for state in states[1:]):
                raise ValueError(f"{key}: non-floating tensor differs between ingredients")
            averaged[key] = first.clone()
    return averaged


def average_models(model_dirs: list[str], out_dir: str) -> str:
    """Average sentence-transformers model directories (every ``*.safetensors`` file: the
    transformer and any module with weights) into ``out_dir``; the rest (tokenizer, pooling,
    configs) is copied from the first ingredient."""
    from safetensors.torch import save_file

    shutil.copytree(model_dirs[0], out_dir, dirs_exist_ok=True)
    weight_files = sorted(p.relative_to(out_dir) for p in Path(out_dir).rglob("*.safetensors"))
    if not weight_files:
        raise ValueError(f"{model_dirs[0]}: no *.safetensors weights to average")
    for rel in weight_files:
        states = [SafetensorsWeights([os.path.join(d, rel)]) for d in model_dirs]
        save_file(average_state_dicts(states), os.path.join(out_dir, rel),
                  metadata={"format": "pt"})
    (Path(out_dir) / "README.md").unlink(missing_ok=True)  # the first ingredient's card
    return out_dir


SPREAD_CHUNK = 1 << 22  # parameters per trial compared at once (32 MB each in float64)


def ingredient_spread(start: Mapping, states: dict[str, Mapping]) -> dict:
    """How far apart the soup's ingredients are: each one's update (its weights minus the
    ``start`` they were all trained from) as a share of the start's norm, and the cosine
    between every two updates. A soup can only add where the ingredients differ: updates
    that are small and nearly parallel average to about any one of them.

    Accumulates the updates' Gram matrix chunk by chunk of each parameter, so memory is one
    chunk per trial whatever the model's size."""
    import torch

    names = list(states)
    # Floating parameters every ingredient has (a buffer the start alone saves is no weight).
    keys = [k for k in start if all(k in state for state in states.values())]
    gram = torch.zeros(len(names), len(names), dtype=torch.float64)
    origin_sq = torch.zeros((), dtype=torch.float64)
    for key in keys:
        origin = start[key]
        if not origin.is_floating_point():
            continue
        origin = origin.to(torch.float64).flatten()
        trials = [states[n][key].flatten() for n in names]
        for lo in range(0, origin.numel(), SPREAD_CHUNK):
            piece = origin[lo:lo + SPREAD_CHUNK]
            updates = torch.stack([t[lo:lo + SPREAD_CHUNK].to(torch.float64) - piece
                                   for t in trials])
            gram += updates @ updates.T
            origin_sq += piece @ piece
    norms = gram.diagonal().sqrt()
    cosines = [float(gram[i, j] / (norms[i] * norms[j]).clamp_min(1e-300))
               for i in range(len(names)) for j in range(i + 1, len(names))]
    return {"update_share": {n: float(norms[i] / origin_sq.sqrt()) for i, n in enumerate(names)},
            "update_cosine_min": min(cosines, default=None),
            "update_cosine_mean": sum(cosines) / len(cosines) if cosines else None}


def _spread_of(base_dir: str, trial_dirs: dict[str, str]) -> dict:
    """``ingredient_spread`` of model directories (the transformer's weights)."""
    return ingredient_spread(SafetensorsWeights.of_model(base_dir),
                             {n: SafetensorsWeights.of_model(d) for n, d in trial_dirs.items()})


def greedy_soup(ingredients: list[str], score: Callable[[list[str]], float]) -> list[dict]:
    """Greedy soup over ``ingredients`` (best first): each step scores the soup with the next
    ingredient added and keeps it only if the score goes up. ``score(members)`` scores the
    average of ``members``. Returns one row per step; the last row's ``members`` is the soup."""
    members = [ingredients[0]]
    best = score(members)
    steps = [{"step": 0, "ingredient": ingredients[0], "score": best, "kept": True,
              "members": list(members)}]
    for i, candidate in enumerate(ingredients[1:], start=1):
        value = score([*members, candidate])
        kept = value > best
        if kept:
            members, best = [*members, candidate], value
        steps.append({"step": i, "ingredient": candidate, "score": value, "kept": kept,
                      "members": list(members)})
        log.info("greedy soup step %d: + %s -> %.4f (%s)", i, candidate, value,
                 "kept" if kept else "dropped")
    return steps


# ---------------------------------------------------------------------------------------
# The stage

def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    return run_stage(run_dir, STAGE, stage_settings(cfg), inputs,
                     lambda staging: _build(cfg, run_dir, staging), force=force)


def stage_settings(cfg: PipelineConfig) -> dict:
    """What the stage's identity hashes. The keys are the names the soup's settings had in
    ``tune`` before they became a section: runs made before must still match."""
    return {"soup_top_k": cfg.soup.top_k, "soup": cfg.soup.method,
            "validation_suites": cfg.distill.validation_suites, "eval": cfg.eval}


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    import pandas as pd

    from biolord_ray.evaluation import build_suite, main_score
    from biolord_ray.models.encode import Embedder, load_sentence_model, sentence_model_dir

    with run_dir.fs.open_input_stream(run_dir.output(stages.DISTILL, "trials")) as f:
        trials = pd.read_csv(f).sort_values(loop.SCORE, ascending=False)
    suite = build_suite(cfg.eval, cfg.distill.validation_suites, run_dir, fast=True)
    with tempfile.TemporaryDirectory(prefix="biolord-soup-") as local:
        ingredients = {}  # trial -> local model directory
        for _, row in trials.iterrows():
            ingredients[row["trial"]] = f"{local}/trials/{row['trial']}"
            pafs.copy_files(run_dir.path(stages.DISTILL, row["model"]),
                            ingredients[row["trial"]], source_filesystem=run_dir.fs)
        order = list(ingredients)
        soup_dirs: dict[tuple, str] = {}  # members -> averaged model, each averaged once
        scores: dict[tuple, float] = {}

        def soup_dir(members: list[str]) -> str:
            key = tuple(sorted(members))
            if key not in soup_dirs:
                soup_dirs[key] = ingredients[members[0]] if len(members) == 1 else \
                    average_models([ingredients[m] for m in members],
                                   f"{local}/soups/{len(soup_dirs)}")
            return soup_dirs[key]

        def score(members: list[str]) -> float:
            key = tuple(sorted(members))
            if key not in scores:
                model = load_sentence_model(soup_dir(members))
                scores[key] = main_score(suite.run(model, Embedder(model)))
            return scores[key]

        spread = _spread_of(sentence_model_dir(cfg.distill.base_model, cfg.models.cache_dir,
                                               cfg.models.trust_remote_code), ingredients)
        steps = greedy_soup(order, score)
        greedy_members = steps[-1]["members"]
        uniform_members = order[:cfg.soup.top_k]
        uniform_score = score(uniform_members)
        trained = {"best_trial": soup_dir([order[0]]), "soup_greedy": soup_dir(greedy_members),
                   "soup_uniform": soup_dir(uniform_members)}
        out = f"{local}/out"
        shutil.copytree(trained[f"soup_{cfg.soup.method}"], f"{out}/{loop.EXPORT_SUBDIR}")
        shutil.copytree(trained["best_trial"], f"{out}/{SINGLE_SUBDIR}")
        (Path(out) / SINGLE_SUBDIR / "README.md").unlink(missing_ok=True)

        report = _evaluate(cfg, run_dir, out, trained)
        _write_tables(out, trials, steps, uniform_members, uniform_score, spread)
        _write_cards(cfg, run_dir, out, trials, steps, uniform_members, report)
        pafs.copy_files(out, staging, destination_filesystem=run_dir.fs)

    counts = {"trials": len(order), "greedy_ingredients": len(greedy_members),
              "uniform_ingredients": len(uniform_members),
              "best_trial_val_score": round(steps[0]["score"], 4),
              "greedy_val_score": round(scores[tuple(sorted(greedy_members))], 4),
              "uniform_val_score": round(uniform_score, 4),
              "update_share_mean": round(sum(spread["update_share"].values()) / len(order), 5)}
    if spread["update_cosine_mean"] is not None:
        counts["update_cosine_mean"] = round(spread["update_cosine_mean"], 3)
        counts["update_cosine_min"] = round(spread["update_cosine_min"], 3)
    if report:
        counts.update({f"full_suite_{label}": round(m["score"], 4)
                       for label, m in report["models"].items()})
    outputs = {"model": loop.EXPORT_SUBDIR, "model_s": SINGLE_SUBDIR, "table": "soup.csv",
               "plot": "soup.png"}
    if report:
        outputs["evaluation"] = "evaluation"
    return StageOutputs(outputs=outputs, counts=counts)


MODEL_LABELS = ["teacher", "best_trial", "soup_greedy", "soup_uniform"]


def _evaluate(cfg: PipelineConfig, run_dir: RunDir, out: str,
              trained: dict[str, str]) -> dict | None:
    """Teacher, best trial and both soups on the full evaluation suite.

    ``trained``: best_trial, soup_greedy and soup_uniform -> model directory (``soup_dir``:
    one per distinct set of trials). Each directory is scored once: a soup of one trial is
    that trial, two soups of the same trials are one model. This run's contrastive model
    (the default teacher) was scored on the same suite by its own stage."""
    from biolord_ray.evaluation import build_suite, evaluate_models
    from biolord_ray.evaluation.report import write_report

    if not cfg.eval.suites:
        return None
    dirs = {"teacher": targets_teacher_dir(cfg, run_dir), **trained}
    exported = run_dir.path(STAGE, loop.EXPORT_SUBDIR)
    locations = {  # where each model lives after the stage (None: where it is)
        "teacher": None, "best_trial": run_dir.path(STAGE, SINGLE_SUBDIR),
        **{f"soup_{kind}": exported if kind == cfg.soup.method
           else f"not exported (soup.method={kind})" for kind in ("greedy", "uniform")}}
    first = {}  # model directory -> the first label that has it
    for label in MODEL_LABELS:
        first.setdefault(dirs[label], label)
    known = {}
    if cfg.targets.teacher is None:
        with run_dir.fs.open_input_stream(
                f"{run_dir.output(stages.TRAIN_CONTRASTIVE, 'evaluation')}/results.json") as f:
            known["teacher"] = json.loads(f.read())["models"][stages.CONTRASTIVE_MODEL_LABEL]
    to_score = [label for label in first.values() if label not in known]
    suite = build_suite(cfg.eval, cfg.eval.suites, run_dir)
    report = evaluate_models([dirs[label] for label in to_score], suite, cfg,
                             labels=to_score, locations=[locations[label] for label in to_score])
    scored = {**known, **report["models"]}
    report["models"] = {}
    for label in MODEL_LABELS:
        result = scored[first[dirs[label]]]
        location = locations[label] or result["path"]
        report["models"][label] = {**result, "spec": location, "path": location}
    write_report(report, f"{out}/evaluation")
    return report


def _write_tables(out: str, trials, steps: list[dict], uniform_members: list[str],
                  uniform_score: float, spread: dict) -> None:
    """soup.csv (every trial and soup with its validation score; for a trial, its update's
    share of the base model's norm) and soup.png."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"model": t, "kind": "trial", "val_score": s, "members": t,
             "update_share": spread["update_share"][t]}
            for t, s in zip(trials["trial"], trials[loop.SCORE], strict=True)]
    rows += [{"model": f"greedy step {s['step']} (+{s['ingredient']})", "kind": "greedy step",
              "val_score": s["score"], "kept": s["kept"], "members": " ".join(s["members"])}
             for s in steps]
    rows.append({"model": f"uniform soup of {len(uniform_members)}", "kind": "uniform soup",
                 "val_score": uniform_score, "members": " ".join(uniform_members)})
    with open(f"{out}/soup.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["model", "kind", "val_score", "kept", "members",
                                    "update_share"])
        writer.writeheader()
        writer.writerows(rows)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    greedy_final = next(s["score"] for s in reversed(steps) if s["kept"])
    names = [*trials["trial"], "uniform soup", "greedy soup"]
    values = [*trials[loop.SCORE], uniform_score, greedy_final]
    left.barh(names, values, color=["tab:blue"] * len(trials) + ["tab:orange", "tab:green"])
    left.set_xlim(min(values) - 0.01, max(values) + 0.005)
    left.invert_yaxis()
    left.set_xlabel("validation score (fast suite)")
    left.set_title("Trials and soups")
    right.plot([s["step"] for s in steps], [s["score"] for s in steps], color="gray", lw=1)
    for s in steps:
        right.scatter(s["step"], s["score"], marker="o" if s["kept"] else "x",
                      color="tab:green" if s["kept"] else "tab:red", zorder=3)
    right.set_xticks([s["step"] for s in steps])
    right.set_xlabel("greedy step (next-best trial added)")
    right.set_ylabel("soup validation score")
    right.set_title("Greedy soup (o kept, x dropped)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/soup.png", dpi=120)
    plt.close(fig)


def _write_cards(cfg: PipelineConfig, run_dir: RunDir, out: str, trials, steps: list[dict],
                 uniform_members: list[str], report: dict | None) -> None:
    from biolord_ray.evaluation.report import markdown
    from biolord_ray.training.export import write_model_card

    counts = run_dir.completed(stages.TEACHER_TARGETS)["counts"]
    data = {"teacher": counts["teacher"], "training texts": counts["train_texts"],
            "training concepts": counts["train_concepts"],
            "validation texts": counts["validation_texts"]}
    trial_rows = "; ".join(f"{t} {s:.4f}" for t, s in zip(trials["trial"], trials[loop.SCORE],
                                                          strict=True))
    greedy_members = steps[-1]["members"]
    soup_members = greedy_members if cfg.soup.method == "greedy" else uniform_members
    evaluation = markdown(report) if report else None
    common = {"Ray Tune grid": ", ".join(f"{k} {v}" for k, v in
                                         cfg.tune.grid_points().items()),
              "trials (validation score)": trial_rows}
    write_model_card(
        f"{out}/{loop.EXPORT_SUBDIR}", load_path=run_dir.path(STAGE, loop.EXPORT_SUBDIR),
        section="distill", title="BioLORD-2023 style model (soup of self-distilled models)",
        summary=f"A {cfg.soup.method} model soup: the parameter-wise average of "
                f"{len(soup_members)} self-distillation runs of the base model, each trained "
                "to reproduce the contrastive model's concept embeddings (the mean of a "
                "concept's names and definitions) for its names and definitions.",
        cfg=cfg, tcfg=cfg.distill, data=data,
        training={**common, "soup": f"{cfg.soup.method}: {', '.join(soup_members)}",
                  "greedy steps": json.dumps([[s["ingredient"], round(s["score"], 4),
                                               s["kept"]] for s in steps])},
        evaluation_markdown=evaluation)
    write_model_card(
        f"{out}/{SINGLE_SUBDIR}", load_path=run_dir.path(STAGE, SINGLE_SUBDIR),
        section="distill", title="BioLORD-2023-S style model (best self-distillation run)",
        summary="The base model trained to reproduce the contrastive model's concept "
                "embeddings (the mean of a concept's names and definitions) for its names and "
                "definitions; the best trial of the Ray Tune grid by validation score.",
        cfg=cfg, tcfg=cfg.distill, data=data,
        training={**common, "selected trial": steps[0]["ingredient"]},
        evaluation_markdown=evaluation)
