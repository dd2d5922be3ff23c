import dataclasses
import logging
import re

import pytest

from biolord_ray.config import (
    ConfigError,
    PipelineConfig,
    available_presets,
    config_hash,
    load_config,
    preset_path,
)


def test_defaults_are_the_embedded_default():
    cfg = load_config()
    assert cfg == PipelineConfig()
    assert cfg.kg.format == "mondo"
    assert cfg.contrastive.base_model == "packaged:all-MiniLM-L6-v2"
    assert cfg.definitions.llm == "packaged:SmolLM2-135M-Instruct"


@pytest.mark.parametrize("name", available_presets())
def test_every_shipped_preset_loads(name, tmp_path):
    # paper needs the user's licensed UMLS release; any existing directory stands in for it.
    cfg = load_config(name, [f"kg.path={tmp_path}"] if name == "paper" else [])
    assert isinstance(cfg, PipelineConfig)
    assert preset_path(name).read_text().startswith("#"), "presets open with who uses them"


def test_tiny_preset_equals_the_defaults():
    assert load_config("tiny") == PipelineConfig()


def test_paper_preset_is_the_paper_setting(tmp_path):
    cfg = load_config("paper", [f"kg.path={tmp_path}"])
    assert cfg.contrastive.base_model == "packaged:all-mpnet-base-v2"
    assert cfg.kg.format == "umls" and cfg.kg.max_concepts is None
    assert cfg.contrastive.use_gpu and cfg.contrastive.precision == "bf16"
    assert cfg.definitions.gpus_per_engine == 1


def test_overrides_are_typed():
    cfg = load_config("tiny", ["contrastive.lr=3e-5", "kg.max_concepts=null",
                               "tune.seeds=[1, 2, 3]",
                               "kg.snomed_language_refset=900000000000508004"])
    assert cfg.contrastive.lr == 3e-5
    assert cfg.kg.max_concepts is None
    assert cfg.tune.seeds == [1, 2, 3]
    assert cfg.kg.snomed_language_refset == "900000000000508004"
    assert load_config(None, ["contrastive.lr=1"]).contrastive.lr == 1.0  # int where float


def test_an_override_keeps_the_rest_of_its_sections_defaults():
    # The default distill section differs from TrainConfig(): setting one of its keys must
    # not reset the others to TrainConfig's (it did: the trial's workers then asked for the
    # CPU that Ray Data's file listing needs, and a 2-CPU cluster waited forever).
    defaults = PipelineConfig().distill
    cfg = load_config(None, ["distill.max_steps=6"])
    assert cfg.distill == dataclasses.replace(defaults, max_steps=6)
    assert cfg.distill.cpus_per_worker != cfg.contrastive.cpus_per_worker


def test_unknown_key_names_key_origin_and_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'contrastive\.learning_rate' "
                       r"\(from --set contrastive.learning_rate=1\)"):
        load_config(None, ["contrastive.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"did you mean 'kg\.max_concepts'"):
        load_config(None, ["kg.max_concept=3"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny\ndefinitions:\n  batchsize: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "definitions.batchsize" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("contrastive:\n  batch_size: large\n")
    with pytest.raises(ConfigError, match=rf"contrastive.batch_size \(from {path}\): "
                       r"expected int, got str 'large'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(None, ["models.trust_remote_code=maybe"])
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(None, ["contrastive.zero_stage=5"])


def test_a_missing_local_model_path_fails_at_load_naming_the_key(tmp_path):
    """Not minutes later in a Ray Train worker that Ray Train retries."""
    missing = tmp_path / "no-such-model"
    for key in ("contrastive.base_model", "distill.base_model", "definitions.llm",
                "targets.teacher", "multilingual.teacher", "multilingual.train.base_model"):
        with pytest.raises(ConfigError, match=rf"{key} \(from --set {key}={missing}\): model "
                           r"directory .* does not exist"):
            load_config(None, [f"{key}={missing}"])
    (tmp_path / "model").mkdir()
    assert load_config(None, [f"contrastive.base_model={tmp_path / 'model'}"])
    # Hub ids and packaged models are not paths: resolved where they are loaded.
    assert load_config(None, ["contrastive.base_model=org/some-model"])


def test_missing_input_file_names_key(tmp_path):
    missing = tmp_path / "nope" / "hp.obo"
    with pytest.raises(ConfigError, match=rf"kg.path \(from --set kg.path={missing}\): "
                       r"no such file or directory"):
        load_config(None, ["kg.format=obo", f"kg.path={missing}"])


def test_bad_combinations_fail_with_the_fix():
    with pytest.raises(ConfigError, match="kg.path.*required when kg.format is 'umls'"):
        load_config(None, ["kg.format=umls"])
    with pytest.raises(ConfigError, match="set kg.format=obo"):
        load_config(None, [f"kg.path={__file__}"])
    with pytest.raises(ConfigError, match="missing file|no such file"):
        load_config("no_such_preset")


def test_definitions_cap_must_be_a_positive_integer(tmp_path):
    for bad in ("0", "-5"):
        with pytest.raises(ConfigError, match=rf"definitions.max_concepts \(from --set "
                           rf"definitions.max_concepts={bad}\): must be a positive integer"):
            load_config(None, [f"definitions.max_concepts={bad}"])
    path = tmp_path / "capped.yaml"
    path.write_text("definitions:\n  max_concepts: 2.5\n")
    with pytest.raises(ConfigError, match=rf"definitions.max_concepts \(from {path}\): "
                       "expected int"):
        load_config(str(path))
    assert load_config(None, ["definitions.max_concepts=400000"]).definitions.max_concepts \
        == 400000


def test_validation_cap_must_be_positive():
    with pytest.raises(ConfigError, match=r"distill.max_validation_rows \(from --set "
                       r"distill.max_validation_rows=0\): must be positive"):
        load_config(None, ["distill.max_validation_rows=0"])
    assert load_config(None, ["contrastive.max_validation_rows=null"]) \
        .contrastive.max_validation_rows is None


def test_training_step_counts_must_be_positive(tmp_path):
    # log_every=0 passed and then divided by zero in the training loop; max_steps=0 read as
    # "no cap" and trained every epoch.
    with pytest.raises(ConfigError, match=r"contrastive.log_every \(from --set "
                       r"contrastive.log_every=0\): must be at least 1"):
        load_config(None, ["contrastive.log_every=0"])
    with pytest.raises(ConfigError, match=r"distill.max_steps \(from --set "
                       r"distill.max_steps=0\): must be positive, or null to train every epoch"):
        load_config(None, ["distill.max_steps=0"])
    path = tmp_path / "steps.yaml"
    path.write_text("multilingual:\n  train:\n    max_steps: -3\n")
    with pytest.raises(ConfigError, match=rf"multilingual.train.max_steps \(from {path}\): "
                       "must be positive"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"contrastive.checkpoint_every \(from --set "
                       r"contrastive.checkpoint_every=-5\): must be positive, or 0 to validate "
                       "and checkpoint only at the ends"):
        load_config(None, ["contrastive.checkpoint_every=-5"])
    with pytest.raises(ConfigError, match=r"distill.max_failures \(from --set "
                       r"distill.max_failures=-2\): must be 0 or more, or -1"):
        load_config(None, ["distill.max_failures=-2"])
    cfg = load_config(None, ["contrastive.max_steps=null", "contrastive.checkpoint_every=0",
                             "distill.max_failures=-1", "distill.log_every=1"])
    assert cfg.contrastive.max_steps is None and cfg.contrastive.checkpoint_every == 0
    assert (cfg.distill.max_failures, cfg.distill.log_every) == (-1, 1)


def test_model_cache_is_the_environments_unless_the_config_sets_one(tmp_path, monkeypatch):
    from pathlib import Path

    from biolord_ray.models import default_cache_dir

    monkeypatch.setenv("BIOLORD_RAY_MODEL_CACHE", str(tmp_path / "env"))
    assert load_config().models.cache_dir is None
    assert default_cache_dir(load_config().models.cache_dir) == tmp_path / "env"
    chosen = load_config(None, [f"models.cache_dir={tmp_path / 'set'}"]).models.cache_dir
    assert default_cache_dir(chosen) == tmp_path / "set"
    monkeypatch.delenv("BIOLORD_RAY_MODEL_CACHE")
    assert default_cache_dir(load_config().models.cache_dir) == \
        Path.home() / ".cache" / "biolord_ray" / "models"


def test_extends_builds_on_a_preset(tmp_path):
    path = tmp_path / "umls.yaml"
    path.write_text(f"extends: paper\nkg:\n  path: {tmp_path}\n  languages: [ENG, SPA]\n")
    cfg = load_config(str(path))
    assert cfg.kg.languages == ["ENG", "SPA"]
    assert cfg.contrastive.base_model == "packaged:all-mpnet-base-v2"  # from paper


def test_config_hash_tracks_values():
    a, b = load_config(), load_config(None, ["kg.max_concepts=10"])
    assert config_hash(a.kg) == config_hash(load_config().kg)
    assert config_hash(a.kg) != config_hash(b.kg)
    assert config_hash(a.contrastive) == config_hash(b.contrastive)


def test_eval_benchmark_files_from_yaml(tmp_path):
    umnsrs = tmp_path / "UMNSRS_sim.csv"
    umnsrs.write_text('"Mean","Stdev","Term1","Term2","CUI1","CUI2"\n')
    config = tmp_path / "eval.yaml"
    config.write_text(f"eval:\n  benchmarks:\n    - {{name: umnsrs, preset: umnsrs-sim, "
                      f"path: {umnsrs}}}\n    - {{name: mine, path: {tmp_path}/gone.tsv}}\n")
    with pytest.raises(ConfigError, match=rf"eval.benchmarks\[1\].path \(from {config}\): "
                                          "no such file"):
        load_config(str(config))
    config.write_text(f"eval:\n  benchmarks:\n    - {{name: umnsrs, preset: umnsrs-sim, "
                      f"path: {umnsrs}}}\n")
    bench = load_config(str(config)).eval.benchmarks[0]
    assert (bench.name, bench.preset, bench.path) == ("umnsrs", "umnsrs-sim", str(umnsrs))


def test_eval_settings_are_checked():
    with pytest.raises(ConfigError, match="eval.suites .*unknown suite.*kgg; known: dev, kg"):
        load_config(None, ["eval.suites=[dev, kgg]"])
    with pytest.raises(ConfigError, match="eval.holdout_fraction .*between 0 and 1"):
        load_config(None, ["eval.holdout_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"eval.benchmarks\[0\].preset .*unknown preset "
                                          "'umnsrs'; known: umnsrs-sim"):
        load_config(None, [f"eval.benchmarks=[{{name: u, preset: umnsrs, path: {__file__}}}]"])


def test_config_survives_a_yaml_round_trip_with_the_same_hash(tmp_path):
    """A job process given the config as a file must find the same stage identities (a
    float default written as 0 would hash differently from the 0.0 read back)."""
    import dataclasses
    import json

    from biolord_ray.config import config_hash, to_dict

    cfg = load_config("tiny")
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(to_dict(cfg)))
    again = load_config(str(path))
    for section in dataclasses.fields(cfg):
        assert config_hash(getattr(again, section.name)) == config_hash(
            getattr(cfg, section.name)), section.name


# ---------------------------------------------------------------------------------------
# Each section's own checks, the cross-section one, and the old key names


@pytest.mark.parametrize("override, key, message", [
    ("kg.max_concepts=0", "kg.max_concepts", "must be positive, or null to keep every concept"),
    ("definitions.max_concepts=0", "definitions.max_concepts", "must be a positive integer"),
    ("contrastive.num_workers=0", "contrastive.num_workers", "must be at least 1"),
    ("distill.batch_size=0", "distill.batch_size", "must be at least 1"),
    ("multilingual.train.keep_checkpoints=0", "multilingual.train.keep_checkpoints",
     "must be at least 1"),
    ("distill.warmup_ratio=1", "distill.warmup_ratio", r"must be in \[0, 1\)"),
    ("contrastive.validation_suites=[dev, kgg]", "contrastive.validation_suites",
     "unknown suite\\(s\\) kgg; known: dev, kg, files, translation"),
    ("targets.max_concepts=0", "targets.max_concepts",
     "must be positive, or null to distill every concept"),
    ("tune.lrs=[]", "tune.lrs", "must be a non-empty list"),
    ("ray.max_idle_workers=-1", "ray.max_idle_workers", "must be 0 or more"),
    ("tune.grid={warmup_ratio: []}", "tune.grid.warmup_ratio", "must be a non-empty list"),
    ("soup.top_k=0", "soup.top_k", "must be at least 1"),
    ("eval.holdout_fraction=0", "eval.holdout_fraction", "must be between 0 and 1"),
    ("multilingual.validation_fraction=1", "multilingual.validation_fraction",
     "must be between 0 and 1 \\(exclusive\\)"),
])
def test_each_sections_check_names_the_key_and_its_origin(override, key, message):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} \(from --set "
                                          rf"{re.escape(override)}\): {message}"):
        load_config(None, [override])


def test_grid_axes_are_checked_against_the_distill_section(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("tune:\n  grid:\n    scale: [10.0, 20.0]\n")
    # scale is the contrastive loss's: distillation trials have no such setting.
    with pytest.raises(ConfigError, match=rf"^tune.grid.scale \(from {path}\): not a distill "
                                          "setting; known: base_model, batch_size"):
        load_config(str(path))
    assert load_config(None, ["tune.grid={max_seq_length: [32, 64]}"]).tune.grid == \
        {"max_seq_length": [32, 64]}


def test_contrastive_loss_keys_are_the_contrastive_sections_only():
    cfg = load_config(None, ["contrastive.scale=10", "contrastive.symmetric=false"])
    assert (cfg.contrastive.scale, cfg.contrastive.symmetric) == (10.0, False)
    assert not hasattr(cfg.distill, "scale") and not hasattr(cfg.multilingual.train, "scale")
    with pytest.raises(ConfigError, match=r"did you mean 'contrastive\.symmetric'"):
        load_config(None, ["contrastive.symetric=false"])


def test_old_soup_keys_load_into_the_soup_section_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="biolord_ray.config")
    cfg = load_config(None, ["tune.soup=uniform", "tune.soup_top_k=2"])
    assert (cfg.soup.method, cfg.soup.top_k) == ("uniform", 2)
    assert "tune.soup (from --set tune.soup=uniform) is deprecated: it is now soup.method" \
        in caplog.text
    assert "tune.soup_top_k (from --set tune.soup_top_k=2) is deprecated: it is now " \
           "soup.top_k" in caplog.text
    # In a section given whole, and in a file that extends a preset setting the new keys:
    # the file's old key wins over the preset's new one, as any key of a file would.
    assert load_config(None, ["tune={soup: uniform}"]).soup.method == "uniform"
    path = tmp_path / "old.yaml"
    path.write_text("extends: tiny\ntune:\n  seeds: [3]\n  soup: uniform\n")
    caplog.clear()
    cfg = load_config(str(path))
    assert (cfg.soup.method, cfg.tune.seeds) == ("uniform", [3])
    assert f"tune.soup (from {path}) is deprecated" in caplog.text
    # --set over a file is one layer over another: the command line wins, either name.
    assert load_config(str(path), ["soup.method=greedy"]).soup.method == "greedy"
    assert load_config("tiny", ["tune.soup=uniform"]).soup.method == "uniform"
    # A bad value names the new key and where the old one was set.
    with pytest.raises(ConfigError, match=r"soup.method \(from --set tune.soup=best\): 'best' "
                                          "is not one of 'greedy', 'uniform'"):
        load_config(None, ["tune.soup=best"])


def test_an_old_key_and_its_new_one_together_are_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("tune:\n  soup_top_k: 2\nsoup:\n  top_k: 3\n")
    with pytest.raises(ConfigError, match=rf"tune.soup_top_k \(from {path}\) and soup.top_k "
                       rf"\(from {path}\) are one setting \(tune.soup_top_k is its old name\); "
                       "keep only soup.top_k"):
        load_config(str(path))
    for overrides in (["soup.method=greedy", "tune.soup=uniform"],
                      ["tune.soup=uniform", "soup={method: greedy}"]):
        with pytest.raises(ConfigError, match=r"tune.soup \(from --set tune.soup=uniform\) and "
                                              r"soup.method \(from --set soup.*keep only "
                                              "soup.method"):
            load_config(None, overrides)


def test_the_contrastive_loss_keys_elsewhere_load_ignored_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="biolord_ray.config")
    path = tmp_path / "old.yaml"
    path.write_text("distill:\n  scale: 10.0\n  lr: 3.0e-5\nmultilingual:\n  train:\n"
                    "    symmetric: false\n")
    cfg = load_config(str(path), ["distill.symmetric=false"])
    assert cfg.distill == dataclasses.replace(PipelineConfig().distill, lr=3e-5)
    assert cfg.multilingual.train == PipelineConfig().multilingual.train
    assert cfg.contrastive == PipelineConfig().contrastive
    for key, origin, home in [("distill.scale", path, "contrastive.scale"),
                              ("multilingual.train.symmetric", path, "contrastive.symmetric"),
                              ("distill.symmetric", "--set distill.symmetric=false",
                               "contrastive.symmetric")]:
        assert f"config key {key} (from {origin}) is deprecated and ignored: only the " \
               f"contrastive loss reads it, as {home}" in caplog.text


def test_unknown_keys_of_the_new_sections_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'soup\.topk' \(from --set "
                                          r"soup\.topk=3\); did you mean 'soup\.top_k'\?"):
        load_config(None, ["soup.topk=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'tune\.soup_size'"):
        load_config(None, ["tune.soup_size=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'distill\.temperature'"):
        load_config(None, ["distill.temperature=0.05"])


# The stage identities (run_stage's config hash of each stage's settings, and the names of the
# Ray Train and Ray Tune runs, here for inputs {}) computed with the code before the config
# got its per-stage sections (soup; scale and symmetric in contrastive only). These are the
# pre-change hashes: a run made before must still match them, or it reruns these stages
# instead of resuming. Unchanged config, unchanged identity.
PRE_CHANGE_IDENTITIES = {
    "default": {
        "train_contrastive": "1c8c9eed9837e92f", "distill": "0f8bc46d512e05b4",
        "soup": "4799526d4199ae2c", "distill_multilingual": "dc7fe506a228a65a",
        "report": "d82f3e21b16a7d7a",
        "run_name:train_contrastive": "ray-train-dc9c15e72a6b",
        "run_name:distill": "tune-e23eb7977701",
        "run_name:distill_multilingual": "ray-train-dccb8ab2d46d"},
    "medium": {
        "train_contrastive": "11657121a38461ea", "distill": "614f0341feb8c399",
        "soup": "c81db2f5aa070b48", "distill_multilingual": "0bcc38f1ea3e3660",
        "report": "5788106651195705",
        "run_name:train_contrastive": "ray-train-8c58022a7a20",
        "run_name:distill": "tune-41483beb881f",
        "run_name:distill_multilingual": "ray-train-44787cb929d6"},
    # Before: contrastive.scale=10, contrastive.symmetric=false, tune.soup=uniform,
    # tune.soup_top_k=2, distill.lr=3e-5, multilingual.train.epochs=2.
    "changed": {
        "train_contrastive": "70265968244aa6d9", "distill": "a22d364d77ca822f",
        "soup": "b1a8f2db77028782", "distill_multilingual": "5b1fc7ba93a802bb",
        "report": "039641c0057277d3",
        "run_name:train_contrastive": "ray-train-56f42c983d7e",
        "run_name:distill": "tune-779a54d1595f",
        "run_name:distill_multilingual": "ray-train-7100f5f94e8e"},
}
CHANGED = ["contrastive.scale=10", "contrastive.symmetric=false", "distill.lr=3e-5",
           "multilingual.train.epochs=2"]


@pytest.mark.parametrize("label, source, overrides", [
    ("default", None, []),
    ("medium", "medium", []),
    ("changed", None, [*CHANGED, "soup.method=uniform", "soup.top_k=2"]),
    ("changed", None, [*CHANGED, "tune.soup=uniform", "tune.soup_top_k=2"]),  # the old keys
    # The contrastive loss's keys, ignored in distillation, never changed its identity here.
    ("default", None, ["distill.scale=20.0", "multilingual.train.symmetric=true"]),
])
def test_stage_identities_are_those_of_runs_made_before(label, source, overrides):
    from biolord_ray import report
    from biolord_ray.multilingual import distill_multilingual
    from biolord_ray.training import contrastive, distill, fitting, soup

    cfg = load_config(source, overrides)
    settings = {"train_contrastive": contrastive.stage_settings(cfg),
                "distill": distill.stage_settings(cfg), "soup": soup.stage_settings(cfg),
                "distill_multilingual": distill_multilingual.stage_settings(cfg),
                "report": report.stage_settings(cfg)}
    found = {stage: config_hash(s) for stage, s in settings.items()}
    found["run_name:train_contrastive"] = fitting.run_name(settings["train_contrastive"], {})
    # distill.run names its Tune experiment this way.
    found["run_name:distill"] = \
        f"tune-{config_hash({'settings': settings['distill'], 'inputs': {}})[:12]}"
    found["run_name:distill_multilingual"] = \
        fitting.run_name(settings["distill_multilingual"], {})
    assert found == PRE_CHANGE_IDENTITIES[label]
