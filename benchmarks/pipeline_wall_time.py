"""Wall time of the main job on the embedded default, per stage and in total (target: 10 min
on a 2-core CPU machine).

Runs ``jobs/full_pipeline.py`` from scratch in a fresh run directory (a subprocess: a new
local Ray instance, as a user would start it) and reads each stage's seconds from the run's
manifest. Two bare baselines, measured in the same invocation, are pieces of the pipeline's
own work done without the platform:

* ``model.encode`` of the first 4,096 MONDO names with all-MiniLM-L6-v2 in this process
  (compute: what training steps, targets and evaluation are made of);
* a fresh Python process that imports sentence-transformers, loads that model and encodes one
  name (the median of three): the start every Ray Train worker and encoder actor pays, and
  most of the pipeline's fixed cost. The host's speed moves the two differently (one day the
  encode was 1.28x slower and the stages that mostly start processes about 2x).

``total / baseline`` tells whether a slower total comes from the code or from a slower (or
busier) machine.

Usage::

    .venv/bin/python benchmarks/pipeline_wall_time.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10 * 60


def bare_encode_seconds(n_texts: int = 4096) -> float:
    from biolord_ray.kg import mondo
    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir

    terms, _ = mondo.load_bundled()
    names = [t["label"] for t in terms.values() if not t.get("deprecated")][:n_texts]
    model = load_sentence_model(sentence_model_dir("packaged:all-MiniLM-L6-v2"), device="cpu")
    model.encode(names[:64])  # warm-up
    started = time.perf_counter()
    model.encode(names, batch_size=64)
    return time.perf_counter() - started


START_SCRIPT = """
from biolord_ray.models.encode import load_sentence_model, sentence_model_dir
load_sentence_model(sentence_model_dir("packaged:all-MiniLM-L6-v2"), device="cpu").encode(["x"])
"""


def bare_start_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", START_SCRIPT], check=True, cwd=REPO,
                       capture_output=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to the job")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    baseline = bare_encode_seconds()
    start = bare_start_seconds()
    print(json.dumps({"bare_encode_seconds": round(baseline, 2),
                      "bare_start_seconds": round(start, 2)}), flush=True)
    run_dir = Path(tempfile.mkdtemp(prefix="biolord-wall-time-"))
    command = [sys.executable, str(REPO / "jobs" / "full_pipeline.py"), "--run-dir",
               str(run_dir), *[arg for o in args.set for arg in ("--set", o)]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    total = time.perf_counter() - started

    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = {name: record["seconds"] for name, record in manifest["stages"].items()}
    report = {"overrides": args.set, "device": f"cpu ({os.cpu_count()} cores)",
              "stages_seconds": stages,
              "startup_and_driver_seconds": round(total - sum(stages.values()), 1),
              "total_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
              "total_over_target": round(total / TARGET_SECONDS, 3),
              "bare_encode_seconds": round(baseline, 2),
              "total_over_bare_encode": round(total / baseline, 1),
              "bare_start_seconds": round(start, 2),
              "total_over_bare_start": round(total / start, 1)}
    print(json.dumps(report, indent=2))
    print(f"total {total:.0f} s ({total / 60:.1f} min), target {TARGET_SECONDS // 60} min: "
          f"{'met' if total <= TARGET_SECONDS else 'missed'}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "pipeline_wall_time.json").write_text(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
