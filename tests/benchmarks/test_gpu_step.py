"""benchmarks/gpu_step.py in its CPU smoke mode, the way the GPU machine runs it: from a folder
holding only the model's config and tokenizer (random weights) and carried pairs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_step.py"


def test_smoke_run_from_a_prepared_folder_reports_every_figure(tmp_path):
    carried, out = tmp_path / "carried", tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "prepare", str(carried),
                    "--model", "packaged:all-MiniLM-L6-v2", "--pairs", "40"], check=True)
    assert (carried / "model" / "config.json").exists()
    assert not list((carried / "model").rglob("*.safetensors"))  # weights stay behind
    assert len((carried / "pairs.jsonl").read_text().splitlines()) == 40

    run = subprocess.run([sys.executable, str(SCRIPT), "run", "--smoke", "--random-weights",
                          "--model", str(carried / "model"),
                          "--pairs", str(carried / "pairs.jsonl"), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "gpu_step.json").read_text())
    assert report["model"].endswith("(random weights)")
    assert report["batch_size"] == 8 and report["timed_steps"] == 2
    assert report["matmul"]["tflops"] > 0
    for name in ("contrastive", "distill"):
        for side in ("platform", "bare"):
            figures = report[name][side]
            assert figures["steps_per_second"] > 0
            assert figures["pairs_per_second"] == pytest.approx(figures["steps_per_second"] * 8)
            assert figures["tokens_per_second"] > figures["pairs_per_second"]
            assert 0 < figures["mfu"] < 1
        assert math.isfinite(report[name]["ratio"]) and report[name]["ratio"] > 0
    assert report["encoder"]["platform"]["texts_per_second"] > 0
    assert "contrastive platform / bare" in run.stdout
