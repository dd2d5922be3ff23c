"""Stage ``report``: the run's final report, in ``<run_dir>/report/``.

* ``results.md/.json/.png``: the base model, -C (contrastive), -S (best distillation trial)
  and both soups (greedy and uniform; the one ``soup.method`` exported is marked) on every
  benchmark of the full suite, general STS beside the biomedical ones when the suite has a
  general-language benchmark. The scores are the ones the ``train_contrastive`` and ``soup``
  stages measured on that same suite (no model is embedded twice);
* ``README.md``: where each model lives, the stage timings and counts from the manifest and,
  when the run has the multilingual stages, the student's evaluation (teacher, student before
  and after training, translation accuracy and MSE per language);
* ``timings.png``: seconds per stage.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile

import pyarrow.fs as pafs

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.evaluation import model_label
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage

STAGE = stages.REPORT


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False,
        only: list[str] | None = None) -> dict:
    """The report of every stage the pipeline runs before it (``stages.pipeline``), or of
    ``only`` these (a run directory that holds part of the pipeline)."""
    inputs = stages.input_identities(STAGE, cfg, run_dir) if only is None else \
        {name: run_dir.stage_identity(name) for name in only}
    return run_stage(run_dir, STAGE, stage_settings(cfg), inputs,
                     lambda staging: _build(cfg, run_dir, staging, list(inputs)), force=force)


def stage_settings(cfg: PipelineConfig) -> dict:
    """What the stage's identity hashes; "tune.soup" is soup.method's old name, kept so that
    runs made before still match."""
    return {"eval": cfg.eval, "tune.soup": cfg.soup.method}


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str,
           reported: list[str]) -> StageOutputs:
    from biolord_ray.evaluation.report import markdown, write_report

    records = {name: run_dir.completed(name) for name in reported}
    outputs = {"readme": "README.md", "timings": "timings.png"}
    with tempfile.TemporaryDirectory(prefix="biolord-report-") as local:
        report = None
        if cfg.eval.suites:
            report = combined_report(cfg, run_dir)
            write_report(report, local)
            outputs.update(results="results.md", chart="results.png")
        _plot_timings(records, f"{local}/timings.png")
        multilingual = markdown(_results(run_dir, stages.DISTILL_MULTILINGUAL)) \
            if stages.DISTILL_MULTILINGUAL in records else None
        with open(f"{local}/README.md", "w") as f:
            f.write(_readme(cfg, run_dir, records, markdown(report) if report else None,
                            multilingual))
        pafs.copy_files(local, staging, destination_filesystem=run_dir.fs)
    counts = {"total_seconds": round(sum(r["seconds"] for r in records.values()), 1)}
    if report:
        counts.update({f"score_{label}": round(m["score"], 4)
                       for label, m in report["models"].items()})
    return StageOutputs(outputs=outputs, counts=counts)


def combined_report(cfg: PipelineConfig, run_dir: RunDir) -> dict:
    """One report of base, -C, -S and both soups from the two stages that scored them."""
    trained = _results(run_dir, stages.TRAIN_CONTRASTIVE)
    souped = _results(run_dir, stages.SOUP)
    base_label = model_label(cfg.contrastive.base_model)  # as train_contrastive labelled it
    models = {
        f"base ({base_label})": _model(trained, base_label, stages.TRAIN_CONTRASTIVE),
        "BioLORD-C (contrastive)": _model(trained, stages.CONTRASTIVE_MODEL_LABEL,
                                          stages.TRAIN_CONTRASTIVE),
        "BioLORD-S (best distillation trial)": _model(souped, "best_trial", stages.SOUP)}
    for kind in ("greedy", "uniform"):
        exported = ", exported" if kind == cfg.soup.method else ""
        models[f"BioLORD (soup, {kind}{exported})"] = _model(souped, f"soup_{kind}",
                                                              stages.SOUP)
    return {"fast": False, "benchmarks": trained["benchmarks"], "models": models,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _results(run_dir: RunDir, stage: str) -> dict:
    """The evaluation report a stage wrote (``evaluation/results.json``)."""
    with run_dir.fs.open_input_stream(
            f"{run_dir.output(stage, 'evaluation')}/results.json") as f:
        return json.loads(f.read())


def _model(results: dict, label: str, stage: str) -> dict:
    if label not in results["models"]:
        raise LookupError(f"{stage}/evaluation/results.json has no model {label!r} (it has "
                          f"{', '.join(results['models'])}); rerun that stage with --force")
    return results["models"][label]


def _readme(cfg: PipelineConfig, run_dir: RunDir, records: dict, results_md: str | None,
            multilingual_md: str | None) -> str:
    total = sum(r["seconds"] for r in records.values())
    lines = [f"# biolord-ray run report: {run_dir.uri}", "",
             f"Knowledge graph {cfg.kg.describe()}"
             + (f", first {cfg.kg.max_concepts} concepts" if cfg.kg.max_concepts else "")
             + f"; base model `{cfg.contrastive.base_model}`.", "",
             "## Models", "",
             # The models of the stages in this report (a run may have only some of them).
             *[f"- {label}: `{run_dir.output(stage, output)}`" for label, stage, output in (
                 ("BioLORD-C (contrastive)", stages.TRAIN_CONTRASTIVE, "model"),
                 ("BioLORD-S (best distillation trial)", stages.SOUP, "model_s"),
                 (f"BioLORD (soup, {cfg.soup.method}, exported)", stages.SOUP, "model"),
                 ("BioLORD-M (multilingual)", stages.DISTILL_MULTILINGUAL, "model"))
               if stage in records],
             ""]
    if results_md:
        lines += [_nested(results_md, "## Evaluation (full suite)"), "![results](results.png)",
                  ""]
    if multilingual_md:
        lines += ["## Multilingual student (BioLORD-M)", "",
                  _nested(multilingual_md, "### Evaluation"), ""]
    lines += ["## Stages", "", f"Total: {total:.0f} s ({total / 60:.1f} min).", "",
              "| stage | seconds | counts |", "|---|---:|---|"]
    lines += [f"| {name} | {r['seconds']:.1f} | {_counts(r['counts'])} |"
              for name, r in records.items()]
    lines += ["", "![timings](timings.png)", ""]
    return "\n".join(lines)


def _nested(results_md: str, title: str) -> str:
    """An evaluation report's Markdown under ``title`` (a heading), its per-benchmark
    headings one level below it."""
    level = title.index(" ")
    body = results_md.split("\n", 1)[1].replace("\n## ", f"\n{'#' * (level + 1)} ")
    return f"{title}\n{body}"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()
                     if not isinstance(v, (dict, list)) and not str(v).startswith("/"))


def _plot_timings(records: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(records)
    seconds = [records[n]["seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, seconds, color="tab:blue")
    ax.invert_yaxis()
    for i, value in enumerate(seconds):
        ax.text(value, i, f" {value:.0f} s", va="center", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title(f"Stage wall time (total {sum(seconds) / 60:.1f} min)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
