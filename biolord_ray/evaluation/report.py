"""The evaluation report: results.json, a Markdown table and a PNG chart (models x benchmarks).

General-language benchmarks (the ``stsb`` preset) get their own "general STS" columns, after
a "biomedical mean" that leaves them out (the score models are selected by,
``suite.main_score``). A report without one keeps its single "mean" column.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from biolord_ray.evaluation.suite import is_general

METRIC_COLUMNS = {
    "similarity": ["spearman", "pearson", "n_pairs", "n_skipped"],
    "retrieval": ["acc@1", "acc@5", "mrr@10", "n_queries", "n_index_concepts"],
    "hierarchy": ["roc_auc", "n_pairs", "n_positive"],
    "translation": ["accuracy", "src2trg", "trg2src", "mse", "n_pairs"],
}
# What the table's mean is, in its caption.
SELECTION = ("`main_score`, which training computes on its validation suites to select "
             "checkpoints, trials and soups")


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report`` (``{"models": {label: {"benchmarks": {name: metrics}}}, ...}``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md",
             "png": out / "results.png"}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text(markdown(report))
    plot(report, paths["png"])
    return paths


def publish_report(report: dict, filesystem: pafs.FileSystem, folder: str) -> dict[str, str]:
    """``write_report`` into ``folder`` on ``filesystem`` (a run directory's: local, S3, GCS):
    written to a local temporary folder, then copied. Returns the files' names."""
    with tempfile.TemporaryDirectory(prefix="biolord-evaluation-") as local:
        paths = write_report(report, local)
        filesystem.create_dir(folder, recursive=True)
        pafs.copy_files(local, folder, destination_filesystem=filesystem)
    return {kind: path.name for kind, path in paths.items()}


def _benchmarks(report: dict) -> list[tuple[str, dict]]:
    """(name, metrics of the first model that has it), in the suite's order (results.json
    stores the metrics with sorted keys), then any others in first-seen order."""
    seen: dict[str, dict] = {}
    for model in report["models"].values():
        for name, result in model["benchmarks"].items():
            seen.setdefault(name, result)
    order = [n for n in report.get("benchmarks", []) if n in seen]
    return [(n, seen[n]) for n in order + [n for n in seen if n not in order]]


def _split_by_domain(benchmarks: list[tuple[str, dict]]):
    """(biomedical benchmarks, general-language benchmarks), each in report order."""
    return ([b for b in benchmarks if not is_general(b[1])],
            [b for b in benchmarks if is_general(b[1])])


def _mean_main_metric(results: dict, benchmarks: list[tuple[str, dict]]) -> float | None:
    values = [results[n][r["main_metric"]] for n, r in benchmarks if n in results]
    return sum(values) / len(values) if values else None


def markdown(report: dict) -> str:
    benchmarks = _benchmarks(report)
    biomedical, general = _split_by_domain(benchmarks)
    models = report["models"]
    mode = "fast subset" if report.get("fast") else "full suite"
    caption = ("Main metric per benchmark: Spearman for similarity files, accuracy@1 for KG "
               "retrieval, ROC AUC for the KG hierarchy, and for translation the accuracy of "
               "finding a held-out pair's other side, both directions averaged (MSE: the "
               "translation's embedding against the teacher's of the English text).")
    if general:
        caption += (" Biomedical mean: the mean of the main metrics of every benchmark except "
                    f"the general-language ones ({SELECTION}). General STS: Spearman on "
                    "general-English sentence similarity (STS Benchmark), the check that "
                    "training keeps general language understanding; shown beside the "
                    "biomedical mean, not averaged into it.")
    else:
        caption += f" Mean: the mean of the main metrics ({SELECTION})."
    columns = [f"{n} ({r['main_metric']})" for n, r in biomedical]
    columns.append("biomedical mean" if general else "mean")
    columns += [f"general STS: {n} ({r['main_metric']})" for n, r in general]
    lines = [f"# Evaluation ({mode})", "", caption, "",
             "| model | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, model in models.items():
        results = model["benchmarks"]
        cells = [_fmt(results.get(n, {}).get(r["main_metric"])) for n, r in biomedical]
        cells.append(_fmt(_mean_main_metric(results, biomedical)))
        cells += [_fmt(results.get(n, {}).get(r["main_metric"])) for n, r in general]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, first in benchmarks:
        columns = METRIC_COLUMNS[first["kind"]]
        lines += ["", f"## {name}", "", "| model | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for label, model in models.items():
            result = model["benchmarks"].get(name, {})
            lines.append(f"| {label} | " + " | ".join(_fmt(result.get(c)) for c in columns)
                         + " |")
    lines += ["", "Models:", ""] + [f"- {label}: `{m['spec']}`" for label, m in models.items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    biomedical, general = _split_by_domain(_benchmarks(report))
    benchmarks = biomedical + general  # general STS last, on a grey band
    labels = list(report["models"])
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(benchmarks))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(benchmarks) + 2), 4.2))
    if general:
        ax.axvspan(len(biomedical) - 0.5, len(benchmarks) - 0.5, color="0.9", zorder=0)
    for i, label in enumerate(labels):
        results = report["models"][label]["benchmarks"]
        values = [results.get(n, {}).get(r["main_metric"], np.nan) for n, r in benchmarks]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, [("general STS: " if is_general(r) else "") + f"{n}\n({r['main_metric']})"
                      for n, r in benchmarks], fontsize=8)
    ax.set_ylabel("score (main metric)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Evaluation" + (" (fast subset)" if report.get("fast") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
