import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biolord_ray.config import KGConfig
from biolord_ray.run_dir import RunDir, StageOutputs, fingerprint, run_stage


def _writer(calls, rows=3, fail=False):
    def build(staging):
        calls.append(staging)
        pq.write_table(pa.table({"x": list(range(rows))}), f"{staging}/part.parquet")
        if fail:
            raise RuntimeError("killed halfway")
        return StageOutputs(outputs={"table": "part.parquet"}, counts={"rows": rows})
    return build


def test_stage_runs_once_then_is_skipped(tmp_path):
    run_dir, calls = RunDir(str(tmp_path / "run")), []
    inputs = {"kg": fingerprint(__file__)}
    first = run_stage(run_dir, "demo", KGConfig(), inputs, _writer(calls))
    second = run_stage(run_dir, "demo", KGConfig(), inputs, _writer(calls))
    assert len(calls) == 1 and first == second
    record = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["demo"]
    assert record["status"] == "complete" and record["counts"] == {"rows": 3}
    assert record["seconds"] >= 0 and record["inputs"] == json.loads(json.dumps(inputs))
    assert pq.read_table(run_dir.output("demo", "table")).num_rows == 3


def test_changed_config_input_or_lost_output_reruns(tmp_path):
    run_dir, calls = RunDir(str(tmp_path)), []
    src = tmp_path / "input.txt"
    src.write_text("a")
    run_stage(run_dir, "demo", KGConfig(), {"kg": fingerprint(str(src))}, _writer(calls))
    run_stage(run_dir, "demo", KGConfig(max_concepts=5), {"kg": fingerprint(str(src))},
              _writer(calls))
    src.write_text("a longer input")
    run_stage(run_dir, "demo", KGConfig(max_concepts=5), {"kg": fingerprint(str(src))},
              _writer(calls, rows=4))
    assert len(calls) == 3
    (tmp_path / "demo" / "part.parquet").unlink()
    run_stage(run_dir, "demo", KGConfig(max_concepts=5), {"kg": fingerprint(str(src))},
              _writer(calls, rows=4))
    assert len(calls) == 4


def test_failed_stage_leaves_previous_outputs_unreadable_and_nothing_partial(tmp_path):
    run_dir, calls = RunDir(str(tmp_path)), []
    run_stage(run_dir, "demo", KGConfig(), {}, _writer(calls))
    with pytest.raises(RuntimeError, match="killed halfway"):
        run_stage(run_dir, "demo", KGConfig(max_concepts=7), {}, _writer(calls, fail=True))
    record = run_dir.stage_record("demo")
    assert record["status"] == "failed" and "killed halfway" in record["error"]
    with pytest.raises(FileNotFoundError, match="stage 'demo' is not complete \\(failed\\)"):
        run_dir.output("demo", "table")
    assert list((tmp_path / "_staging").iterdir()) == []  # no half-written staging left
    # A rerun with the working builder completes and publishes.
    run_stage(run_dir, "demo", KGConfig(max_concepts=7), {}, _writer(calls, rows=5))
    assert pq.read_table(run_dir.output("demo", "table")).num_rows == 5


def test_never_run_stage_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'ingest_kg' is not complete \(never run\)"):
        RunDir(str(tmp_path)).output("ingest_kg", "concepts")


def test_uri_run_dir_resolves_through_pyarrow(tmp_path):
    run_dir = RunDir(f"file://{tmp_path}/by-uri")
    run_dir.write_json({"a": 1}, "x.json")
    assert (tmp_path / "by-uri" / "x.json").exists()
    assert run_dir.read_json("x.json") == {"a": 1}


def test_fingerprint_sees_every_file_of_a_directory(tmp_path):
    (tmp_path / "a.RRF").write_text("1")
    before = fingerprint(str(tmp_path))
    (tmp_path / "b.RRF").write_text("2")
    after = fingerprint(str(tmp_path))
    assert set(after["files"]) == {"a.RRF", "b.RRF"} and before != after
    with pytest.raises(FileNotFoundError):
        fingerprint(str(tmp_path / "missing"))


def test_a_folder_is_read_a_file_per_task_fused_with_the_map_and_write(ray_local, tmp_path):
    """Three files in, three out, each read, mapped and written by one task: Ray Data splits
    no read (which would keep it from fusing with the map and the write)."""
    import pyarrow.fs as pafs

    from biolord_ray.run_dir import read_parquet, write_parquet

    fs = pafs.LocalFileSystem()
    schema = pa.schema([("id", pa.string())])
    (tmp_path / "in").mkdir()
    for n in range(3):
        pq.write_table(pa.table({"id": [f"{n}-{i}" for i in range(5000)]}, schema=schema),
                       tmp_path / "in" / f"part-{n}.parquet")
    ds = read_parquet(str(tmp_path / "in"), fs).map_batches(
        lambda batch: batch.append_column("upper", pa.compute.utf8_upper(batch["id"])),
        batch_format="pyarrow")
    write_parquet(ds, str(tmp_path / "out"), fs, schema, min_rows_per_file=None)
    sources = [{row.split("-")[0] for row in pq.read_table(f).column("id").to_pylist()}
               for f in sorted((tmp_path / "out").iterdir())]
    assert sorted(sources) == [{"0"}, {"1"}, {"2"}]  # a file out per file in, all its rows
    assert pq.read_table(tmp_path / "out").num_rows == 15000
