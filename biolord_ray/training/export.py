"""What a training stage leaves behind: the model directory with its model card, the
training history as a table and a plot."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from biolord_ray.config import PipelineConfig, TrainConfig, to_dict

TRANSFORMERS_USAGE = '''```python
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

def mean_pooling(model_output, attention_mask):
    token_embeddings = model_output[0]
    mask = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).float()
    return torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)

sentences = ["Cat scratch injury", "Cat scratch disease", "Bartonellosis"]
tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModel.from_pretrained("{path}")
encoded = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    output = model(**encoded)
embeddings = F.normalize(mean_pooling(output, encoded["attention_mask"]), p=2, dim=1)
```'''


# Licences of the base models with a packaged twin (the model card states the base model's
# licence; the KG's own terms, UMLS's or SNOMED CT's, apply to what was trained on it).
BASE_MODEL_LICENCES = {"sentence-transformers/all-mpnet-base-v2": "apache-2.0",
                       "sentence-transformers/all-MiniLM-L6-v2": "apache-2.0"}
CARD_TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "dense",
             "biomedical", "biolord", "biolord-ray"]


def write_model_card(model_dir: str | Path, *, load_path: str, section: str, title: str,
                     summary: str, cfg: PipelineConfig, tcfg: TrainConfig, data: dict,
                     training: dict, evaluation_markdown: str | None = None,
                     languages: list[str] | None = None) -> Path:
    """README.md in ``model_dir``: sentence-transformers' own model card (its card data: base
    model id, language, licence, architecture, usage), followed by how this model was made:
    the summary, the training data and recipe (``section``: its config section) and the
    evaluation table. ``load_path``: where the model will live."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
    from sentence_transformers.base.model_card import generate_model_card

    from biolord_ray.models import hub_id

    base = hub_id(tcfg.base_model)
    card_data = SentenceTransformerModelCardData(
        language=languages or ["en"], license=BASE_MODEL_LICENCES.get(base),
        model_name=title, tags=CARD_TAGS,
        # Offline, and not trained by sentence-transformers' trainer (no widget examples or
        # training logs of its own): the recipe is written below.
        local_files_only=True, generate_widget_examples=False)
    model = SentenceTransformer(str(model_dir), device="cpu", model_card_data=card_data)
    card_data.base_model = base  # set_base_model would ask the hub to confirm it
    card_data.model_id = load_path  # the usage example loads it from there
    lines = [
        generate_model_card(model).rstrip(),
        "",
        "## How this model was made (biolord-ray)",
        "",
        summary,
        "",
        f"Made by biolord-ray on {dt.date.today().isoformat()} from the base model "
        f"`{tcfg.base_model}`.",
        "",
        "### Usage (transformers: mean pooling, then L2 normalisation)",
        "",
        TRANSFORMERS_USAGE.format(path=load_path),
        "",
        "### Training data",
        "",
        f"Knowledge graph: {cfg.kg.describe()}"
        + (f", first {cfg.kg.max_concepts} concepts" if cfg.kg.max_concepts else "") + ".",
        "",
        *_table(["", ""], data.items()),
        "",
        "### Training",
        "",
        *_table(["", ""], training.items()),
        "",
        f"Config (`{section}`):",
        "",
        "```json",
        _json(to_dict(tcfg)),
        "```",
    ]
    if evaluation_markdown:
        lines += ["", "### Evaluation", "", evaluation_markdown.strip()]
    card = Path(model_dir) / "README.md"
    card.write_text("\n".join(lines) + "\n")
    return card


def export_best(result, model_dir: str) -> tuple[list[dict], dict]:
    """A Ray Train result's best checkpoint (by validation score) -> its exported model in
    ``model_dir``. Returns the run's validation history (kept in the last checkpoint's loop
    state) and the best checkpoint's metrics."""
    import json
    import os

    import pyarrow.fs as pafs

    from biolord_ray.training import loop

    best, best_metrics = max(result.best_checkpoints, key=lambda c: c[1][loop.SCORE])
    with result.checkpoint.as_directory() as latest:
        with open(os.path.join(latest, loop.STATE_FILE)) as f:
            history = json.load(f)["history"]
    with best.as_directory() as directory:
        pafs.copy_files(os.path.join(directory, loop.EXPORT_SUBDIR), model_dir)
    return history, best_metrics


def write_history(history: list[dict], out_dir: str | Path, title: str) -> dict[str, Path]:
    """history.csv and history.png (training loss, validation loss and score per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(history)

    panels = [("train_loss", "training loss"), ("val_loss", "validation loss"),
              ("val_score", "validation score (fast suite)")]
    panels = [(k, label) for k, label in panels if any(k in row for row in history)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
        ax.plot(*zip(*points, strict=True), marker="o")
        ax.set_xlabel("optimiser step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=120)
    plt.close(fig)
    return {"csv": out / "history.csv", "png": out / "history.png"}


def _table(header: list[str], rows) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header),
            *(f"| {k} | {v} |" for k, v in rows)]


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)
