"""The stage registry: the pipeline's order, each stage's prerequisites under a config, the
modules it names, and a package without import circles."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from biolord_ray import stages
from biolord_ray.config import load_config

PACKAGE = Path(__file__).resolve().parents[1] / "biolord_ray"
JOBS = PACKAGE.parent / "jobs"


def test_the_main_job_runs_the_multilingual_stages_only_when_enabled():
    cfg = load_config(None, [])
    assert stages.pipeline(cfg) == [
        "ingest_kg", "eval_sets", "generate_definitions", "build_pairs", "train_contrastive",
        "teacher_targets", "distill", "soup", "report"]
    cfg.multilingual.enabled = True
    assert stages.pipeline(cfg)[-3:] == ["parallel_data", "distill_multilingual", "report"]


def test_prerequisites_follow_the_config():
    cfg = load_config(None, [])
    assert stages.prerequisites([stages.TRAIN_CONTRASTIVE], cfg) == [
        "ingest_kg", "eval_sets", "generate_definitions", "build_pairs"]
    # The ablation without LLM definitions; a teacher given by path.
    cfg = load_config(None, ["pairs.generated_definitions=false",
                             "targets.teacher=packaged:all-MiniLM-L6-v2"])
    assert stages.prerequisites([stages.TRAIN_CONTRASTIVE], cfg) == [
        "ingest_kg", "eval_sets", "build_pairs"]
    assert stages.prerequisites([stages.TEACHER_TARGETS, stages.DISTILL, stages.SOUP], cfg) == [
        "ingest_kg", "eval_sets", "build_pairs"]
    # The report needs every stage the pipeline runs before it.
    cfg = load_config(None, ["multilingual.enabled=true"])
    assert stages.prerequisites([stages.REPORT], cfg) == stages.pipeline(cfg)[:-1]


def test_every_stage_names_a_module_that_builds_it():
    for name, stage in stages.STAGES.items():
        module = importlib.import_module(stage.module)
        assert module.STAGE == name, stage.module
        assert callable(module.run)
        for needed in stage.inputs:
            assert needed.stage in stages.NAMES[:stages.NAMES.index(name)], (name, needed)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at any level of the file (function bodies too):
    ``from pkg import sub`` counts as importing pkg.sub, not pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names
                    if f"{node.module}.{a.name}" in modules]
            found.update(subs if len(subs) == len(node.names) else [node.module, *subs])
    return found & modules


def _package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name) -> its file."""
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
            .removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}


def test_no_import_circle_in_the_package():
    paths = _package_modules()
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert not circles


def test_each_layer_only_looks_down():
    """Shared support below every stage: no stage module (the registry's) imports another
    stage's, and no other module of the package (evaluation/, models/, the run directory,
    the readers of stage outputs...) imports a stage's, at module level or in a function.
    A stage reads another's outputs through ``stage_outputs`` and names it through
    ``stages``; only the registry imports stage modules, by name, when a stage runs."""
    paths = _package_modules()
    stage_modules = {stage.module for stage in stages.STAGES.values()}
    assert stage_modules <= set(paths)
    evaluation = {name for name in paths if name.startswith("biolord_ray.evaluation")}
    assert evaluation - stage_modules  # the evaluation support is checked below
    found = sorted(f"{'stage' if name in stage_modules else 'support module'} {name} imports "
                   f"{imported}" for name, path in paths.items()
                   for imported in _imports(path, set(paths)) & stage_modules - {name})
    assert not found, "\n".join(found)


def test_the_registry_and_the_readers_of_stage_outputs_import_light():
    code = ("import sys, biolord_ray.stages, biolord_ray.stage_outputs\n"
            "heavy = {'torch', 'ray', 'transformers', 'vllm'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_job_help_shows_the_usage_examples():
    shown = subprocess.run([sys.executable, str(JOBS / "train_contrastive.py"), "--help"],
                           capture_output=True, text=True, check=True).stdout
    assert "ray job submit --working-dir . -- python jobs/train_contrastive.py --config " \
           "paper \\\n" in shown
    assert "Interrupted runs resume from the" in shown


def test_a_stage_asking_for_more_than_the_cluster_has_stops_at_its_start(ray_local, tmp_path,
                                                                         caplog):
    """The paper preset on a machine without GPUs: generate_definitions names the keys at its
    start instead of waiting for GPUs that never come; an autoscaling cluster only warns."""
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import ResourceError, check_resources

    cfg = load_config("paper", ["ray.address=null", f"kg.path={tmp_path}",
                                f"run_dir={tmp_path / 'run'}"])
    run_dir = RunDir(cfg.run_dir)
    with pytest.raises(ResourceError) as err:
        stages.run(stages.GENERATE_DEFINITIONS, cfg, run_dir)
    assert "4 GPU (definitions.concurrency x definitions.gpus_per_engine) but the " \
           "cluster has 0" in str(err.value)
    assert "ray.autoscaling=true" in str(err.value)
    assert not (tmp_path / "run" / "manifest.json").exists()  # nothing started

    demands = stages.STAGES[stages.DISTILL].demands(cfg)
    assert demands == [("CPU", 8 * 8 + 1, "distill.num_workers x distill.cpus_per_worker + "
                                          "tune.cpus_per_trial"),
                       ("GPU", 8, "distill.num_workers with distill.use_gpu")]
    check_resources(stages.DISTILL, demands, autoscaling=True)
    assert "waiting for the autoscaler" in caplog.text
    # The embedded default fits this machine.
    tiny = load_config(None, [])
    for name in stages.pipeline(tiny):
        check_resources(name, stages.STAGES[name].demands(tiny))
