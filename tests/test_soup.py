"""Teacher targets, exact parameter averaging and greedy soup selection, on real models."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from biolord_ray.config import ConfigError, TargetsConfig, load_config
from biolord_ray.training import soup, targets


def _minilm_dir() -> str:
    from biolord_ray.evaluation.embed import sentence_model_dir

    return sentence_model_dir("packaged:all-MiniLM-L6-v2")


def test_targets_are_the_normalised_mean_of_names_and_definitions(ray_local):
    import ray.data
    from sentence_transformers import SentenceTransformer

    pairs = pa.table({
        "concept_id": ["HP:1", "HP:1", "HP:1", "HP:1", "HP:2", "HP:2"],
        "anchor": ["Seizure", "Seizure", "Epileptic fit", "Epileptic fit", "Fever", "Fever"],
        "positive": ["A sudden burst of abnormal brain activity.",
                     "Seizure is a kind of Abnormality of the nervous system.",
                     "A sudden burst of abnormal brain activity.",
                     "Seizure is a kind of Abnormality of the nervous system.",
                     "Body temperature above the normal range.", "Fever"],
        "kind": ["definition", "description", "definition", "description", "definition",
                 "definition"],
        "source": ["HPO", "kg", "HPO", "kg", "HPO", "HPO"],
    })
    model_dir = _minilm_dir()
    rows = targets.teacher_targets(ray.data.from_arrow(pairs), model_dir,
                                   TargetsConfig()).to_pandas()

    # Each distinct name and definition once; KG descriptions left out by default; a
    # definition equal to a name counts once, as the name.
    got = sorted(zip(rows["concept_id"], rows["text"], rows["kind"], strict=True))
    assert got == [("HP:1", "A sudden burst of abnormal brain activity.", "definition"),
                   ("HP:1", "Epileptic fit", "name"), ("HP:1", "Seizure", "name"),
                   ("HP:2", "Body temperature above the normal range.", "definition"),
                   ("HP:2", "Fever", "name")]
    model = SentenceTransformer(model_dir, device="cpu")
    for concept, texts in {"HP:1": ["Seizure", "Epileptic fit",
                                    "A sudden burst of abnormal brain activity."],
                           "HP:2": ["Fever", "Body temperature above the normal range."]}.items():
        mean = model.encode(texts, normalize_embeddings=True).mean(axis=0)
        expected = mean / np.linalg.norm(mean)
        for target in rows[rows["concept_id"] == concept]["target"]:
            np.testing.assert_allclose(np.asarray(target), expected, atol=1e-5)


def test_cpu_encoder_actors_must_leave_a_cpu_for_the_shuffle(ray_local):
    with pytest.raises(ValueError, match="targets.concurrency=2 CPU encoder actors"):
        targets.check_room_for_shuffles(TargetsConfig(concurrency=2))
    targets.check_room_for_shuffles(TargetsConfig(concurrency=1))
    targets.check_room_for_shuffles(TargetsConfig(concurrency=4, num_gpus=1))


def test_averaging_is_exact(tmp_path):
    from safetensors.torch import load_file, save_file
    from sentence_transformers import SentenceTransformer

    base = _minilm_dir()
    weights = load_file(f"{base}/model.safetensors")
    generator = torch.Generator().manual_seed(0)
    moved = {k: v + 0.01 * torch.randn(v.shape, generator=generator)
             if v.is_floating_point() else v for k, v in weights.items()}
    other = tmp_path / "other"
    soup.average_models([base], str(other))  # a copy of the model directory
    save_file(moved, other / "model.safetensors", metadata={"format": "pt"})

    out = soup.average_models([base, str(other)], str(tmp_path / "soup"))
    averaged = load_file(f"{out}/model.safetensors")
    for key, value in weights.items():
        if value.is_floating_point():
            expected = ((value.double() + moved[key].double()) / 2).float()
            assert torch.equal(averaged[key], expected), key
        else:
            assert torch.equal(averaged[key], value), key
    assert SentenceTransformer(out, device="cpu").encode(["Fever"]).shape == (1, 384)

    # Three ingredients, against numpy's float64 mean.
    states = [{"w": torch.randn(5, 3, generator=generator)} for _ in range(3)]
    expected = np.mean([s["w"].double().numpy() for s in states], axis=0).astype(np.float32)
    np.testing.assert_array_equal(soup.average_state_dicts(states)["w"].numpy(), expected)


def test_averaging_refuses_mismatched_ingredients():
    with pytest.raises(ValueError, match="different parameters"):
        soup.average_state_dicts([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    with pytest.raises(ValueError, match="non-floating tensor differs"):
        soup.average_state_dicts([{"ids": torch.arange(3)}, {"ids": torch.arange(1, 4)}])


def test_greedy_soup_keeps_only_ingredients_that_improve_the_score():
    # Ingredients are parameter vectors; a soup's score is minus its distance to a target.
    target = torch.tensor([1.0, 1.0])
    ingredients = {"a": torch.tensor([1.2, 0.9]),   # best alone
                   "b": torch.tensor([0.9, 1.2]),   # averaging with a improves
                   "c": torch.tensor([3.0, -2.0]),  # would make the soup worse
                   "d": torch.tensor([0.9, 0.95])}  # improves the soup of a and b

    def score(members):
        averaged = soup.average_state_dicts([{"w": ingredients[m]} for m in members])["w"]
        return -float(torch.linalg.norm(averaged - target))

    order = sorted(ingredients, key=lambda m: score([m]), reverse=True)
    assert order == ["d", "a", "b", "c"]
    steps = soup.greedy_soup(order, score)
    assert [(s["ingredient"], s["kept"]) for s in steps] == [
        ("d", True), ("a", True), ("b", True), ("c", False)]
    assert steps[-1]["members"] == ["d", "a", "b"]
    kept_scores = [s["score"] for s in steps if s["kept"]]
    assert kept_scores == sorted(kept_scores)


def test_tune_grid_axes_must_be_distill_settings():
    with pytest.raises(ConfigError, match="tune.grid.learning_rate"):
        load_config(None, ["tune.grid={learning_rate: [1e-5]}"])
    with pytest.raises(ConfigError, match="tune.seeds"):
        load_config(None, ["tune.seeds=[]"])
    cfg = load_config(None, ["tune.grid={warmup_ratio: [0.0, 0.1]}"])
    assert cfg.tune.grid == {"warmup_ratio": [0.0, 0.1]}
