"""Model cards are sentence-transformers' own (card data: base model id, language, licence),
followed by the recipe and the evaluation."""

import shutil

import yaml

from biolord_ray.config import load_config
from biolord_ray.models import hub_id, resolve_model
from biolord_ray.training.export import write_model_card


def test_hub_ids_of_specs(tmp_path):
    assert hub_id("packaged:all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("packaged:ALL-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert hub_id("FremyCompany/BioLORD-2023") == "FremyCompany/BioLORD-2023"
    assert hub_id(str(tmp_path)) is None  # a local model has no hub id


def test_card_carries_sentence_transformers_card_data_and_the_recipe(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model("packaged:all-MiniLM-L6-v2"), model_dir)
    cfg = load_config(None, [])
    card = write_model_card(
        model_dir, load_path="runs/tiny/train_contrastive/model", section="contrastive",
        title="BioLORD-2023-C style contrastive model", summary="Names next to definitions.",
        cfg=cfg, tcfg=cfg.contrastive, data={"training pairs": 12},
        training={"DeepSpeed": "ZeRO-2, fp32"}, evaluation_markdown="| model | score |",
        languages=["en", "es"]).read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["license"] == "apache-2.0" and front["language"] == ["en", "es"]
    assert front["library_name"] == "sentence-transformers" and "biolord" in front["tags"]
    assert "# BioLORD-2023-C style contrastive model" in card
    assert 'SentenceTransformer("runs/tiny/train_contrastive/model")' in card
    for part in ("Output Dimensionality:** 384", "mean_pooling", "| training pairs | 12 |",
                 "| DeepSpeed | ZeRO-2, fp32 |", "Config (`contrastive`)", "### Evaluation"):
        assert part in card, part
