"""Teacher targets, exact parameter averaging and greedy soup selection, on real models; the
run report's table of base, -C, -S and both soups."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from biolord_ray import report, stages
from biolord_ray.config import ConfigError, TargetsConfig, load_config
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.training import contrastive, soup, teacher_targets


def _minilm_dir() -> str:
    from biolord_ray.models.encode import sentence_model_dir

    return sentence_model_dir("packaged:all-MiniLM-L6-v2")


def test_targets_are_the_normalised_mean_of_names_and_definitions(ray_local, tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
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
    # The stage's Ray Data path, HP:1 in the training split and HP:2 in the validation one,
    # each split capped at its one concept.
    paths = {}
    for split, concept in (("train", "HP:1"), ("validation", "HP:2")):
        paths[split] = str(tmp_path / split)
        os.makedirs(paths[split])
        pq.write_table(pairs.filter(pc.equal(pairs["concept_id"], concept)),
                       f"{paths[split]}/pairs.parquet")
    fs = RunDir(str(tmp_path)).fs
    targets = teacher_targets._targets_on_ray(paths, fs, model_dir,
                                              TargetsConfig(max_concepts=1), len(pairs))
    for split, concept in (("train", "HP:1"), ("validation", "HP:2")):
        teacher_targets._write_dataset(targets, split, str(tmp_path / "out" / split), fs)
        written = pq.read_table(tmp_path / "out" / split)
        assert written.schema.equals(teacher_targets.target_schema(384))
        assert set(written["concept_id"].to_pylist()) == {concept}
    rows = targets.to_pandas()
    # Small inputs are encoded in the calling process: the same rows.
    local = teacher_targets.targets_in_process(pairs, model_dir, TargetsConfig()).to_pandas()
    assert sorted(local["text"]) == sorted(rows["text"])
    for text, target in zip(local["text"], local["target"], strict=True):
        np.testing.assert_allclose(np.asarray(target),
                                   np.asarray(rows.loc[rows["text"] == text, "target"].iloc[0]),
                                   atol=1e-5)

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


def test_a_target_cap_keeps_the_pairs_of_the_lowest_drawn_concepts(tmp_path):
    import pyarrow.parquet as pq

    from biolord_ray.keys import draw

    ids = [f"HP:{i}" for i in range(20) for _ in range(3)]  # 3 pairs per concept
    table = pa.table({"concept_id": ids, "anchor": ids, "positive": ids,
                      "kind": ["definition"] * 60, "source": ["HPO"] * 60})
    pq.write_table(table, tmp_path / "pairs.parquet")
    tcfg = TargetsConfig(max_concepts=5, seed=3)
    chosen = teacher_targets.sampled_concept_ids(str(tmp_path / "pairs.parquet"),
                                                 RunDir(str(tmp_path)).fs, tcfg)
    expected = sorted({*ids}, key=lambda c: draw(3, c))[:5]
    assert sorted(chosen.to_pylist()) == sorted(expected)
    # The in-process path draws the same concepts, and keeps every pair of each (3).
    kept = teacher_targets._sampled(table, tcfg)
    assert sorted(set(kept["concept_id"].to_pylist())) == sorted(expected)
    assert kept.num_rows == 15


def test_cpu_encoder_actors_must_leave_a_cpu_for_the_shuffle(ray_local):
    with pytest.raises(ValueError, match="targets.concurrency=2 CPU encoder actors"):
        teacher_targets.check_room_for_shuffles(TargetsConfig(concurrency=2))
    teacher_targets.check_room_for_shuffles(TargetsConfig(concurrency=1))
    teacher_targets.check_room_for_shuffles(TargetsConfig(concurrency=4, num_gpus=1))


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


def _scored_stage(run_dir, stage, scores, outputs):
    """A completed stage whose evaluation/results.json holds ``scores``: label -> (ehr-rel-a,
    kg-linking, stsb), as the evaluation suite writes them."""
    def result(kind, metric, value, domain):
        return {"kind": kind, "main_metric": metric, metric: value, "domain": domain}

    models = {}
    for label, (ehr, linking, stsb) in scores.items():
        models[label] = {"spec": label, "path": label, "score": (ehr + linking) / 2,
                         "benchmarks": {
                             "ehr-rel-a": result("similarity", "spearman", ehr, "biomedical"),
                             "stsb": result("similarity", "spearman", stsb, "general"),
                             "kg-linking": result("retrieval", "acc@1", linking, "biomedical")}}

    def build(staging):
        os.makedirs(f"{staging}/evaluation")
        with open(f"{staging}/evaluation/results.json", "w") as f:
            json.dump({"fast": False, "benchmarks": ["ehr-rel-a", "stsb", "kg-linking"],
                       "models": models}, f)
        return StageOutputs(outputs={**outputs, "evaluation": "evaluation"})

    run_stage(run_dir, stage, {"stage": stage}, {}, build)


def test_run_report_shows_base_c_s_and_both_soups_with_general_sts(tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    # The trained model first: the report reads models by label, not by position.
    _scored_stage(run_dir, contrastive.STAGE,
                  {stages.CONTRASTIVE_MODEL_LABEL: (0.46, 0.94, 0.70),
                   "all-MiniLM-L6-v2": (0.40, 0.90, 0.82)}, {"model": "model"})
    _scored_stage(run_dir, soup.STAGE,
                  {"teacher": (0.46, 0.94, 0.70), "best_trial": (0.47, 0.95, 0.78),
                   "soup_greedy": (0.48, 0.96, 0.80), "soup_uniform": (0.45, 0.93, 0.81)},
                  {"model": "model", "model_s": "model_s"})
    cfg = load_config(None, ["soup.method=uniform", f"run_dir={tmp_path / 'run'}"])
    record = report.run(cfg, run_dir, only=[contrastive.STAGE, soup.STAGE])

    readme = (tmp_path / "run" / "report" / "README.md").read_text()
    # Columns: ehr-rel-a, kg-linking, biomedical mean (by hand), general STS.
    assert ("| model | ehr-rel-a (spearman) | kg-linking (acc@1) | biomedical mean | "
            "general STS: stsb (spearman) |") in readme
    for row in ("| base (all-MiniLM-L6-v2) | 0.4000 | 0.9000 | 0.6500 | 0.8200 |",
                "| BioLORD-C (contrastive) | 0.4600 | 0.9400 | 0.7000 | 0.7000 |",
                "| BioLORD-S (best distillation trial) | 0.4700 | 0.9500 | 0.7100 | 0.7800 |",
                "| BioLORD (soup, greedy) | 0.4800 | 0.9600 | 0.7200 | 0.8000 |",
                "| BioLORD (soup, uniform, exported) | 0.4500 | 0.9300 | 0.6900 | 0.8100 |",
                f"- BioLORD (soup, uniform, exported): `{tmp_path}/run/soup/model`"):
        assert row in readme, row
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    assert set(results["models"]) == {
        "base (all-MiniLM-L6-v2)", "BioLORD-C (contrastive)",
        "BioLORD-S (best distillation trial)", "BioLORD (soup, greedy)",
        "BioLORD (soup, uniform, exported)"}
    assert record["counts"]["score_BioLORD (soup, greedy)"] == 0.72


def test_ingredient_spread_measures_how_far_apart_the_trials_are():
    start = {"w": torch.tensor([3.0, 4.0]), "ids": torch.tensor([0, 1])}  # norm 5
    states = {"a": {"w": torch.tensor([4.0, 4.0])},    # update (1, 0)
              "b": {"w": torch.tensor([3.0, 5.0])},    # update (0, 1)
              "c": {"w": torch.tensor([5.0, 4.0])}}    # update (2, 0)
    spread = soup.ingredient_spread(start, states)
    assert spread["update_share"] == pytest.approx({"a": 0.2, "b": 0.2, "c": 0.4})
    # cos(a, b) = 0, cos(a, c) = 1, cos(b, c) = 0
    assert spread["update_cosine_min"] == pytest.approx(0.0)
    assert spread["update_cosine_mean"] == pytest.approx(1 / 3)
    one = soup.ingredient_spread(start, {"a": states["a"]})
    assert one["update_cosine_mean"] is None and one["update_share"]["a"] == pytest.approx(0.2)
