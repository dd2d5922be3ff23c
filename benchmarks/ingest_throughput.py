"""Ingestion throughput and peak memory of the UMLS MRCONSO streaming reader.

Generates realistic MRCONSO.RRF files (``synthetic_umls.generate_mrconso``; cached under
``--data-dir``, keyed by size and seed), then, for each size, measures in fresh subprocesses:

* **bare**: ``pyarrow.csv.read_csv`` of the whole file into one in-memory table, with the
  same read/parse/convert options ``biolord_ray.kg.delimited.read_range`` parses with
  (pipe, no quoting, 19 column names, string types, the 9 columns ``umls.read`` keeps);
  median of ``--repeat`` runs. Peak memory = the kernel's high-water RSS (VmHWM) of that
  single process. For context (unless ``--no-breakdown``): a read of all 19 columns, a
  streaming ``pyarrow.csv.open_csv`` pass (batches dropped), and open_csv ->
  ``names_to_facts`` -> one Parquet file in one process (the pipeline's work without Ray).
* **pipeline**: the platform's streaming reader, ``read_delimited(MRCONSO) ->
  map_batches(names_to_facts)`` consumed with ``write_parquet`` into a temp dir (what
  ingestion does), on a fresh local ``ray.init(num_cpus=2)``; for context also the same
  without ``names_to_facts``. Peak memory = the peak over time of the *summed PSS*
  (proportional set size: shared pages, including object-store pages mapped by workers,
  are counted once overall) of the driver, the Ray system processes (raylet, gcs_server,
  agents) and all Ray worker processes, sampled every ``--pss-interval`` s; summed RSS
  (double counts shared pages) and summed RssAnon are sampled every ``--interval`` s. The
  object store's usage as the raylet reports it (bytes used, spilled) is polled about once
  a second and reported separately. CPU time (user+system) of all those processes is
  recorded too: the machine may be shared, and CPU time moves less with other load than
  wall-clock time does.
* the full ``umls.read`` concept assembly (facts bucketed by concept through files, each
  bucket assembled with Arrow kernels: ``tables.assemble_concepts``), at ``--assemble-rows``
  (smaller files, each run under a time limit); its rate between the two sizes is
  extrapolated to the main sizes. ``--skip-assemble`` skips.

Prints a table and writes ``ingest_throughput.json`` (and a PNG if matplotlib is installed)
to ``--out``.

Usage::

    .venv/bin/python benchmarks/ingest_throughput.py [--sizes 2500000,5000000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from synthetic_umls import generate_mrconso  # noqa: E402

from biolord_ray.config import KGConfig  # noqa: E402
from biolord_ray.kg import umls  # noqa: E402

GENERATOR_VERSION = 2
DEFAULT_DATA_DIR = "/tmp/biolord_ray_bench"
MIB = 1024 * 1024
# The MRCONSO columns umls.read keeps (a copy of the list in umls.read, which builds it inline),
# and the names_to_facts options it passes, from the default KGConfig.
KEEP = ["CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "TTY", "STR", "SUPPRESS"]
COLUMNS = umls.MRCONSO + ["_end"]
_DEFAULT_KG = KGConfig()
NAMES_OPTIONS = {"languages": _DEFAULT_KG.languages, "vocabularies": _DEFAULT_KG.vocabularies,
                 "keep_suppressed": _DEFAULT_KG.keep_suppressed}


def mrconso_file(data_dir: Path, rows: int, seed: int) -> tuple[Path, float | None]:
    """The cached generated file for ``rows`` (generated if missing) and generation time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"MRCONSO_{rows}_seed{seed}_v{GENERATOR_VERSION}.RRF"
    if path.exists():
        return path, None
    t = time.perf_counter()
    generate_mrconso(path, rows, seed)
    return path, time.perf_counter() - t


# --------------------------------------------------------------------------------------------
# Memory sampling
# --------------------------------------------------------------------------------------------


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _category(proc: psutil.Process, root_pid: int) -> str:
    """driver (this process), workers (Ray worker processes: ray::IDLE, ray::<task>, actors)
    or ray_system (raylet, gcs_server, agents, log monitor, ...)."""
    if proc.pid == root_pid:
        return "driver"
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline()[:3])
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "ray_system"
    title = cmd if cmd.startswith("ray::") else name
    if title.startswith(RAY_AGENTS):
        return "ray_system"
    if title.startswith("ray::") or "default_worker.py" in cmd:
        return "workers"
    return "ray_system"


def _is_idle(proc: psutil.Process) -> bool:
    """A Ray worker between tasks: Ray sets its process title back to ray::IDLE."""
    try:
        return " ".join(proc.cmdline()[:2]).startswith("ray::IDLE")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssShmem / VmHWM (KiB) from /proc/PID/status: cheap, no page walk."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssShmem", "VmHWM")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _pss_kib(pid: int) -> int:
    """PSS (KiB) from /proc/PID/smaps_rollup (walks page tables: ~1-5 ms a process)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class MemorySampler(threading.Thread):
    """Samples the memory of this process and all its descendants (for a Ray driver: the
    raylet, gcs_server, agents and every worker).

    Every ``interval`` s: summed RSS and summed RssAnon (private anonymous memory: heaps,
    Arrow buffers) from /proc/PID/status. Every ``pss_interval`` s: summed PSS from
    /proc/PID/smaps_rollup (shared pages split between the processes mapping them, so the
    sum counts them once), also per category. ``store_fn`` (optional) returns (object store
    bytes used, bytes spilled) and is polled every ``store_interval`` s.
    """

    def __init__(self, interval: float = 0.2, pss_interval: float = 1.0, store_fn=None,
                 store_interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval, self.pss_interval = interval, pss_interval
        self.store_fn, self.store_interval = store_fn, store_interval
        self.root = psutil.Process()
        self._stop_event = threading.Event()
        self._cats: dict[int, str] = {}
        self.series: list[dict] = []      # fast samples
        self.pss_series: list[dict] = []  # PSS samples
        self.store_series: list[tuple[float, int, int]] = []
        self.t0 = time.perf_counter()
        self.cost_s = 0.0  # time spent sampling (CPU taken from the measured work)
        self._cpu: dict[int, float] = {}  # last seen user+system CPU seconds, by pid

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user+system) used so far by every process seen (exited ones included,
        up to their last sample), by category and in total."""
        out = {"driver": 0.0, "workers": 0.0, "ray_system": 0.0}
        for pid, cpu in self._cpu.items():
            out[self._cats.get(pid, "ray_system")] += cpu
        out["total"] = sum(self._cpu.values())
        return out

    def _procs(self) -> list[psutil.Process]:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        return procs

    def _cat(self, p: psutil.Process) -> str:
        cat = self._cats.get(p.pid)
        if cat is None or cat == "ray_system":  # a worker may not have its title yet
            cat = self._cats[p.pid] = _category(p, self.root.pid)
        return cat

    def sample(self, pss: bool = False) -> dict:
        t = time.perf_counter()
        out = {"t": t - self.t0, "rss": 0, "anon": 0, "n_procs": 0, "n_workers": 0,
               "n_idle_workers": 0, "pss_idle_workers": 0}
        by_cat = {"driver": 0, "workers": 0, "ray_system": 0}
        for p in self._procs():
            try:
                st = _status_kib(p.pid)
                ct = p.cpu_times()
                self._cpu[p.pid] = ct.user + ct.system
                cat = self._cat(p)
                pss_kib = _pss_kib(p.pid) if pss else 0
            except (OSError, ValueError, psutil.Error):
                continue
            out["rss"] += st.get("VmRSS", 0) * 1024
            out["anon"] += st.get("RssAnon", 0) * 1024
            out["n_procs"] += 1
            out["n_workers"] += cat == "workers"
            by_cat[cat] += pss_kib * 1024
            if pss and cat == "workers" and _is_idle(p):
                # A worker kept between tasks (ray::IDLE), with what its last task left.
                out["n_idle_workers"] += 1
                out["pss_idle_workers"] += pss_kib * 1024
        if pss:
            out["pss"] = sum(by_cat.values())
            out.update({f"pss_{k}": v for k, v in by_cat.items()})
            self.pss_series.append(out)
        self.series.append(out)
        self.cost_s += time.perf_counter() - t
        return out

    def run(self) -> None:
        next_pss = next_store = 0.0
        while not self._stop_event.is_set():
            now = time.perf_counter() - self.t0
            self.sample(pss=now >= next_pss)
            if now >= next_pss:
                next_pss = now + self.pss_interval
            if self.store_fn is not None and now >= next_store:
                try:
                    used, spilled = self.store_fn()
                    self.store_series.append((now, used, spilled))
                except Exception:  # noqa: BLE001 - best effort
                    pass
                next_store = now + self.store_interval
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample(pss=True)

    def summary(self, since: float = 0.0) -> dict:
        fast = [s for s in self.series if s["t"] >= since] or self.series
        slow = [s for s in self.pss_series if s["t"] >= since] or self.pss_series
        peak = max(slow, key=lambda s: s["pss"])
        cats = ("driver", "workers", "ray_system")
        res = {
            "peak_pss_mib": peak["pss"] / MIB,
            "peak_rss_sum_mib": max(s["rss"] for s in fast) / MIB,
            "peak_anon_sum_mib": max(s["anon"] for s in fast) / MIB,
            "at_peak_pss_by_process_mib": {k: peak[f"pss_{k}"] / MIB for k in cats},
            "peak_pss_by_process_mib": {k: max(s[f"pss_{k}"] for s in slow) / MIB
                                        for k in cats},
            "max_processes": max(s["n_procs"] for s in fast),
            "max_worker_processes": max(s["n_workers"] for s in fast),
            "samples": len(fast), "pss_samples": len(slow),
            "sampling_cpu_s": self.cost_s,
        }
        store = [s for s in self.store_series if s[0] >= since]
        if store:
            res["object_store_peak_used_mib"] = max(s[1] for s in store) / MIB
            res["object_store_spilled_mib"] = max(s[2] for s in store) / MIB
        return res


# --------------------------------------------------------------------------------------------
# Measurements (each runs in its own fresh subprocess: see child_main)
# --------------------------------------------------------------------------------------------


def _csv_options(keep: list[str] | None):
    """Exactly the pyarrow options delimited.read_range parses a range of a file with."""
    return dict(
        read_options=pacsv.ReadOptions(column_names=COLUMNS, skip_rows=0),
        parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in COLUMNS}, include_columns=keep or [],
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def _own_status_mib() -> dict[str, float]:
    return {k: v / 1024 for k, v in _status_kib(os.getpid()).items()}


def run_bare(path: str, mode: str, repeat: int, scratch: str) -> dict:
    """One process, no Ray. mode: read_csv (the 9 kept columns, whole table in memory),
    read_csv_all (all 19 columns), open_csv (streaming, batches dropped), open_csv_facts
    (streaming -> names_to_facts -> one Parquet file: the pipeline's work without Ray).

    Peak memory is the kernel's high-water RSS of this process (VmHWM, reset at exec)."""
    import pyarrow.parquet as pq

    base_rss = _own_status_mib()["VmRSS"]
    times, cpu, rows, out_rows, nbytes = [], [], 0, 0, 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        if mode.startswith("open_csv"):
            reader = pacsv.open_csv(path, **_csv_options(KEEP))
            writer, rows, out_rows = None, 0, 0
            out_path = os.path.join(scratch, f"bare_facts_{os.getpid()}.parquet")
            for batch in reader:
                rows += batch.num_rows
                if mode == "open_csv_facts":
                    facts = umls.names_to_facts(pa.Table.from_batches([batch]), **NAMES_OPTIONS)
                    if writer is None:
                        writer = pq.ParquetWriter(out_path, facts.schema)
                    writer.write_table(facts)
                    out_rows += facts.num_rows
            if writer is not None:
                writer.close()
                os.unlink(out_path)
        else:
            table = pacsv.read_csv(path, **_csv_options(KEEP if mode == "read_csv" else None))
            rows, nbytes = table.num_rows, table.nbytes
            del table
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    st = _own_status_mib()
    return {"mode": mode, "rows": rows, "output_rows": out_rows or None,
            "seconds": statistics.median(times), "times": times,
            "cpu_seconds": statistics.median(cpu),
            "rows_per_s": rows / statistics.median(times), "peak_rss_mib": st["VmHWM"],
            "baseline_rss_mib": base_rss, "peak_above_baseline_mib": st["VmHWM"] - base_rss,
            "table_nbytes_mib": nbytes / MIB}


def _start_ray(num_cpus: int):
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    from biolord_ray.runtime import configure_ray_data

    configure_ray_data(progress_bars=False)
    return ray, object_store_probe()


def object_store_probe():
    """A function returning (bytes used, bytes spilled) of the running Ray's object store,
    for ``MemorySampler(store_fn=...)``."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)

    def store_fn():
        st = get_memory_info_reply(state, timeout_seconds=5).store_stats
        return st.object_store_bytes_used, st.spilled_bytes_total

    return store_fn


def _parquet_rows(out_dir: str) -> tuple[int, int]:
    import pyarrow.parquet as pq

    files = [os.path.join(root, f) for root, _, names in os.walk(out_dir)
             for f in names if f.endswith(".parquet")]
    return sum(pq.read_metadata(f).num_rows for f in files), len(files)


def run_pipeline(path: str, mode: str, num_cpus: int, interval: float, pss_interval: float,
                 scratch: str, deadline_s: float | None) -> dict:
    """mode: facts (read_delimited -> names_to_facts -> write_parquet), read_only
    (read_delimited -> write_parquet), assemble (umls.read(...).concepts -> write_parquet)."""
    from biolord_ray.kg.tables import read_delimited

    ray, store_fn = _start_ray(num_cpus)
    sampler = MemorySampler(interval=interval, pss_interval=pss_interval, store_fn=store_fn)
    sampler.start()
    time.sleep(3.0)  # let the idle cluster settle: its footprint is the baseline
    idle = sampler.sample(pss=True)
    idle_cpu = sampler.cpu_seconds()
    t_start = idle["t"]
    out_dir = tempfile.mkdtemp(prefix=f"out_{mode}_", dir=scratch)
    result: dict = {"mode": mode}
    t = time.perf_counter()
    if mode == "assemble":
        meta = tempfile.mkdtemp(prefix="META_", dir=scratch)
        os.symlink(path, os.path.join(meta, "MRCONSO.RRF"))
        open(os.path.join(meta, "MRREL.RRF"), "w").close()
        import pyarrow.fs as pafs

        # Assembles now (bucketed through files under scratch); ds reads the result.
        ds = umls.read(KGConfig(format="umls", path=meta),
                       tempfile.mkdtemp(prefix="concepts_", dir=scratch),
                       pafs.LocalFileSystem()).concepts
    else:
        ds = read_delimited(path, COLUMNS, KEEP, "|", header=False)
        if mode == "facts":
            ds = ds.map_batches(umls.names_to_facts, batch_format="pyarrow",
                                fn_kwargs=NAMES_OPTIONS)
    error: list[BaseException] = []

    def consume():
        try:
            ds.write_parquet(out_dir)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            error.append(e)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(deadline_s)
    seconds = time.perf_counter() - t
    sampler.stop()
    if worker.is_alive():
        result.update(timed_out=True)
    elif error:
        result.update(error=repr(error[0]))
    else:
        out_rows, out_files = _parquet_rows(out_dir)
        result.update(output_rows=out_rows, output_files=out_files)
        try:
            result["dataset_stats"] = ds.stats()
        except Exception:  # noqa: BLE001 - stats are a nice-to-have
            pass
    result["seconds"] = seconds
    cpu = sampler.cpu_seconds()
    result["cpu_seconds"] = cpu["total"] - idle_cpu["total"]
    result["cpu_seconds_by_process"] = {k: cpu[k] - idle_cpu[k] for k in cpu if k != "total"}
    capacity = ray.cluster_resources().get("object_store_memory", 0)
    result["object_store_capacity_mib"] = capacity / MIB
    s = sampler.summary(since=t_start)
    result.update(s)
    result["idle_pss_mib"] = idle["pss"] / MIB
    result["idle_pss_by_process_mib"] = {k[4:]: idle[k] / MIB for k in idle
                                         if k.startswith("pss_")}
    result["idle_rss_sum_mib"] = idle["rss"] / MIB
    result["peak_pss_above_idle_mib"] = s["peak_pss_mib"] - idle["pss"] / MIB
    result["series"] = [(round(x["t"] - t_start, 2), round(x["pss"] / MIB, 1))
                        for x in sampler.pss_series if x["t"] >= t_start]
    result["store_series"] = [(round(x[0] - t_start, 2), round(x[1] / MIB, 1))
                              for x in sampler.store_series if x[0] >= t_start]
    shutil.rmtree(out_dir, ignore_errors=True)
    _shutdown_ray(ray)
    return result


def _shutdown_ray(ray) -> None:
    """Stop the local Ray instance this process started, and any of its processes (raylet,
    gcs_server, agents, workers: all descendants of this process) still alive after that,
    by pid: a run stopped at its deadline must not leave them behind."""
    try:
        ours = psutil.Process().children(recursive=True)
    except psutil.Error:
        ours = []
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - a job cut off at its deadline may object
        pass
    _, alive = psutil.wait_procs(ours, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


BARE_MODES = ("read_csv", "read_csv_all", "open_csv", "open_csv_facts")


def child_main(args: argparse.Namespace) -> None:
    if args.child in BARE_MODES:
        res = run_bare(args.file, args.child, args.repeat, args.scratch)
    else:
        res = run_pipeline(args.file, args.child, args.num_cpus, args.interval,
                           args.pss_interval, args.scratch, args.deadline)
    with open(args.result, "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    os._exit(0)  # do not wait for a Ray job that hit its deadline


def run_child(mode: str, path: Path, args: argparse.Namespace, scratch: str,
              timeout: float | None = None, repeat: int = 1) -> dict:
    """Run one measurement in a fresh interpreter; kill its whole process tree on timeout."""
    fd, result = tempfile.mkstemp(suffix=".json", dir=scratch)
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--file", str(path),
           "--result", result, "--repeat", str(repeat), "--num-cpus", str(args.num_cpus),
           "--interval", str(args.interval), "--pss-interval", str(args.pss_interval),
           "--scratch", scratch]
    if timeout is not None:
        cmd += ["--deadline", str(timeout)]
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hard_limit = None if timeout is None else timeout + 120
    try:
        out, _ = proc.communicate(timeout=hard_limit)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, _ = proc.communicate()
        return {"mode": mode, "timed_out": True, "seconds": hard_limit}
    try:
        with open(result) as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError):
        raise RuntimeError(f"measurement {mode} on {path} failed:\n{out[-4000:]}") from None
    finally:
        os.unlink(result)
    res["loadavg_1min"] = [load_before, os.getloadavg()[0]]
    return res


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def _delta(a: dict, z: dict, key: str) -> str:
    x, y = a["pipeline"].get(key), z["pipeline"].get(key)
    return "n/a" if x is None or y is None else f"{y - x:+,.0f}"


def _fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def print_report(results: list[dict], assemble: list[dict]) -> str:
    lines = []
    w = lines.append
    w("")
    w("MRCONSO ingestion: bare pyarrow.csv.read_csv vs the platform's streaming reader")
    w("  bare      pyarrow.csv.read_csv of the whole file into one table, same options as")
    w("            tables.read_delimited (19 names, pipe, no quoting, string types, the 9")
    w("            columns umls.read keeps); median of --repeat runs, one process, no Ray.")
    w("            peak = kernel high-water RSS (VmHWM) of that process, MiB")
    w("  pipeline  read_delimited(MRCONSO) -> map_batches(names_to_facts) -> write_parquet,")
    w("            fresh local ray.init(num_cpus=2); wall time from building the Dataset to")
    w("            write_parquet returning (Ray start-up excluded).")
    w("            peak PSS = peak over time of the summed PSS (proportional set size) of")
    w("            driver + Ray system processes (raylet, gcs, agents) + Ray workers, MiB;")
    w("            shared pages (libraries, object-store pages a process maps) count once.")
    w("            >idle = that peak minus the same sum for the idle cluster just before;")
    w("            RSS sum = peak of summed RSS (double counts shared pages);")
    w("            workers = peak summed PSS of Ray worker processes alone;")
    w("            obj store = peak plasma bytes in use as the raylet reports them")
    w("  ratio     pipeline rows/s / bare rows/s (rows = MRCONSO input rows)")
    w("")
    hdr = (f"{'rows':>10} {'file MiB':>8} {'bare r/s':>9} {'pipe r/s':>9} {'ratio':>6} "
           f"{'bare peak':>9} {'pipe PSS':>9} {'>idle':>6} {'RSS sum':>8} {'workers':>8} "
           f"{'obj store':>9}")
    w(hdr)
    w("-" * len(hdr))
    for r in results:
        b, p = r["bare"], r["pipeline"]
        w(f"{r['rows']:>10,} {r['file_mib']:>8,.0f} {_fmt_rate(b['rows_per_s']):>9} "
          f"{_fmt_rate(p.get('rows_per_s')):>9} {r['ratio']:>6.3f} "
          f"{_fmt_mib(b['peak_rss_mib']):>9} {_fmt_mib(p['peak_pss_mib']):>9} "
          f"{_fmt_mib(p['peak_pss_above_idle_mib']):>6} {_fmt_mib(p['peak_rss_sum_mib']):>8} "
          f"{_fmt_mib(p['peak_pss_by_process_mib']['workers']):>8} "
          f"{_fmt_mib(p.get('object_store_peak_used_mib')):>9}")
    if len(results) >= 2:
        a, z = results[0], results[-1]
        growth_rows = z["rows"] / a["rows"]
        ba, bz = a["bare"]["peak_rss_mib"], z["bare"]["peak_rss_mib"]
        pa_, pz = a["pipeline"]["peak_pss_mib"], z["pipeline"]["peak_pss_mib"]
        ia = a["pipeline"]["peak_pss_above_idle_mib"]
        iz = z["pipeline"]["peak_pss_above_idle_mib"]
        w("-" * len(hdr))
        w(f"peak memory growth, {a['rows']:,} -> {z['rows']:,} rows (x{growth_rows:.1f}):")
        w(f"  bare read_csv       {bz - ba:+8,.0f} MiB  ({ba:,.0f} -> {bz:,.0f}, x{bz / ba:.2f})")
        w(f"  pipeline (PSS)      {pz - pa_:+8,.0f} MiB  ({pa_:,.0f} -> {pz:,.0f}, "
          f"x{pz / pa_:.2f})")
        w(f"  pipeline (>idle)    {iz - ia:+8,.0f} MiB  ({ia:,.0f} -> {iz:,.0f})")
        wa = a["pipeline"]["peak_pss_by_process_mib"]["workers"]
        wz = z["pipeline"]["peak_pss_by_process_mib"]["workers"]
        w(f"  of which: object store peak {_delta(a, z, 'object_store_peak_used_mib')} MiB, "
          f"Ray workers' PSS {wz - wa:+,.0f} MiB")
        drows = z["rows"] - a["rows"]
        parts = []
        for key, label in (("bare", "bare"), ("pipeline", "pipeline")):
            dt = z[key]["seconds"] - a[key]["seconds"]
            dc = z[key]["cpu_seconds"] - a[key]["cpu_seconds"]
            parts.append(f"{label} {_fmt_rate(drows / dt) if dt > 0 else 'n/a'} rows/s, "
                         f"{1e6 * dc / drows:.2f} us CPU/row")
        w("marginal cost between the sizes (difference of the two runs, so fixed start-up "
          "costs cancel):")
        w("  " + "; ".join(parts))
    for r in results:
        b, p = r["bare"], r["pipeline"]
        w(f"{r['rows']:>10,} CPU time: bare {b['cpu_seconds']:.1f} s, pipeline "
          f"{p['cpu_seconds']:.1f} s (all Ray processes); CPU-time ratio bare/pipeline "
          f"{b['cpu_seconds'] / p['cpu_seconds']:.3f}")
    w("")
    w("context (same files; bare rows: one process, no Ray, peak = VmHWM; Ray rows: peak "
      "summed PSS;")
    w("CPU s = user+system CPU of all processes involved; load = 1-min load average before ->"
      " after,")
    w("the machine is shared, so wall-clock rates move with other users' load):")
    hdr2 = (f"{'rows':>10} {'variant':<58} {'rows/s':>8} {'seconds':>8} {'CPU s':>7} "
            f"{'us CPU/row':>10} {'peak MiB':>9} {'load':>10}")
    w(hdr2)
    w("-" * len(hdr2))
    variants = (("bare", "bare read_csv, 9 kept columns (the baseline)"),
                ("bare_all", "bare read_csv, all 19 columns"),
                ("open_csv", "bare open_csv streaming, batches dropped"),
                ("open_csv_facts", "bare open_csv -> names_to_facts -> Parquet (no Ray)"),
                ("read_only", "Ray: read_delimited -> write_parquet (no names_to_facts)"),
                ("pipeline", "Ray: read_delimited -> names_to_facts -> write_parquet"))
    for r in results:
        for key, label in variants:
            x = r.get(key)
            if not x:
                continue
            peak = x.get("peak_rss_mib", x.get("peak_pss_mib"))
            load = x.get("loadavg_1min", [0, 0])
            w(f"{r['rows']:>10,} {label:<58} {_fmt_rate(x.get('rows_per_s')):>8} "
              f"{x['seconds']:>8.1f} {x['cpu_seconds']:>7.1f} "
              f"{1e6 * x['cpu_seconds'] / r['rows']:>10.2f} {_fmt_mib(peak):>9} "
              f"{load[0]:>4.1f}->{load[1]:<4.1f}")
    w("")
    for r in results:
        p = r["pipeline"]
        c, m = p["cpu_seconds_by_process"], p["at_peak_pss_by_process_mib"]
        w(f"{r['rows']:>10,} pipeline: {p['output_rows']:,} facts in {p['output_files']} "
          f"Parquet files; up to {p['max_worker_processes']} Ray worker processes")
        w(f"{'':>10}   CPU s: driver {c['driver']:.1f}, workers {c['workers']:.1f}, Ray "
          f"system {c['ray_system']:.1f} (sampler itself {p['sampling_cpu_s']:.1f})")
        w(f"{'':>10}   PSS at peak: driver {m['driver']:,.0f}, workers {m['workers']:,.0f}, "
          f"Ray system {m['ray_system']:,.0f} MiB; idle cluster {p['idle_pss_mib']:,.0f} MiB")
        w(f"{'':>10}   object store: peak {_fmt_mib(p.get('object_store_peak_used_mib'))} of "
          f"{p['object_store_capacity_mib']:,.0f} MiB (Ray Data may queue up to ~50% = "
          f"{p['object_store_capacity_mib'] / 2:,.0f} MiB before backpressure)")
    if assemble:
        w("")
        w("umls.read concept assembly (MRCONSO facts -> buckets by concept id -> "
          "concepts_from_facts per bucket -> write_parquet), on separate smaller files:")
        ok = []
        for x in assemble:
            if x.get("timed_out"):
                w(f"{x['rows']:>10,} rows: stopped at the {x['seconds']:.0f} s limit")
            elif x.get("error"):
                w(f"{x['rows']:>10,} rows: failed: {x['error'][:300]}")
            else:
                ok.append(x)
                w(f"{x['rows']:>10,} rows: {x['seconds']:.1f} s, {_fmt_rate(x['rows_per_s'])} "
                  f"input rows/s, {x['output_rows']:,} concepts, CPU {x['cpu_seconds']:.1f} s; "
                  f"peak summed PSS {x['peak_pss_mib']:,.0f} MiB (>idle "
                  f"{x['peak_pss_above_idle_mib']:,.0f}), object store peak "
                  f"{_fmt_mib(x.get('object_store_peak_used_mib'))} MiB, spilled "
                  f"{_fmt_mib(x.get('object_store_spilled_mib'))} MiB, up to "
                  f"{x['max_worker_processes']} worker processes")
        if len(ok) >= 2 and ok[-1]["seconds"] > ok[0]["seconds"]:
            rate = (ok[-1]["rows"] - ok[0]["rows"]) / (ok[-1]["seconds"] - ok[0]["seconds"])
            fixed = ok[0]["seconds"] - ok[0]["rows"] / rate
            w(f"  marginal rate {_fmt_rate(rate)} rows/s after ~{max(fixed, 0):.0f} s of fixed "
              f"cost; linear extrapolation (optimistic if the cost grows faster than "
              f"linearly with rows):")
            for r in results:
                w(f"  {r['rows']:>10,} rows -> ~{(fixed + r['rows'] / rate) / 60:.0f} min "
                  f"(the streaming facts pipeline above: {r['pipeline']['seconds']:.0f} s)")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_chart(results: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    labels = [f"{r['rows'] / 1e6:g}M" for r in results]
    x = np.arange(len(results))
    ax1.bar(x - 0.2, [r["bare"]["rows_per_s"] / 1e6 for r in results], 0.4, label="bare")
    ax1.bar(x + 0.2, [r["pipeline"]["rows_per_s"] / 1e6 for r in results], 0.4,
            label="pipeline")
    ax1.set(xticks=x, xticklabels=labels, ylabel="M rows/s", title="throughput")
    ax1.legend()
    ax2.plot(labels, [r["bare"]["peak_rss_mib"] for r in results], "o-", label="bare RSS")
    ax2.plot(labels, [r["pipeline"]["peak_pss_mib"] for r in results], "o-",
             label="pipeline summed PSS")
    ax2.plot(labels, [r["pipeline"]["peak_pss_above_idle_mib"] for r in results], "o--",
             label="pipeline PSS above idle")
    ax2.set(ylabel="MiB", title="peak memory")
    ax2.legend()
    for r in results:
        s = r["pipeline"]["series"]
        ax3.plot([t for t, _ in s], [m for _, m in s], label=f"{r['rows'] / 1e6:g}M")
    ax3.set(xlabel="s", ylabel="MiB", title="pipeline summed PSS over time")
    ax3.legend()
    fig.tight_layout()
    path = out / "ingest_throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000,
                    help="rows of the largest file (must be >= 5M unless --allow-small)")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated row counts (default: rows/2,rows)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                    help="cache of generated files (kept across runs)")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--repeat", type=int, default=3, help="repeats of each bare read")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.2,
                    help="RSS sampling period of the Ray processes (s)")
    ap.add_argument("--pss-interval", type=float, default=1.0,
                    help="PSS sampling period (s); PSS reads cost ~1-5 ms a process")
    ap.add_argument("--no-breakdown", action="store_true",
                    help="skip the read-only pipeline and bare context variants")
    ap.add_argument("--assemble-rows", default="100000,250000",
                    help="comma-separated rows of the (separate, cached) files for the "
                         "umls.read concept assembly; it runs at a few thousand rows/s, so "
                         "the main sizes would take far longer than --assemble-timeout")
    ap.add_argument("--skip-assemble", action="store_true")
    ap.add_argument("--assemble-timeout", type=float, default=150.0,
                    help="seconds each assembly run may take before it is stopped")
    ap.add_argument("--allow-small", action="store_true", help="allow files < 5M rows")
    # internal: one measurement in a fresh process
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    assert set(KEEP) <= set(umls.MRCONSO) and len(COLUMNS) == 19
    sizes = ([int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes
             else [args.rows // 2, args.rows])
    sizes = sorted(sizes)
    if sizes[-1] < 5_000_000 and not args.allow_small:
        sys.exit("the largest size must be >= 5,000,000 rows (or pass --allow-small)")
    t_total = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="run_", dir=str(data_dir))
    try:
        results, assemble = [], []
        files = {}
        for rows in sizes:
            path, gen_s = mrconso_file(data_dir, rows, args.seed)
            files[rows] = path
            size = path.stat().st_size / MIB
            print(f"[data] {path} ({size:,.0f} MiB) "
                  + (f"generated in {gen_s:.1f} s" if gen_s else "cached"), flush=True)
        for rows in sizes:
            path = files[rows]
            with open(path, "rb") as f:  # warm the page cache: every variant reads from RAM
                while f.read(64 * MIB):
                    pass
            r = {"rows": rows, "file": str(path), "file_mib": path.stat().st_size / MIB}
            modes = ["read_csv"]
            if not args.no_breakdown:
                modes += ["read_csv_all", "open_csv", "open_csv_facts", "read_only"]
            for mode in modes + ["facts"]:
                x = run_child(mode, path, args, scratch,
                              repeat=1 if mode == "open_csv_facts" else args.repeat)
                if "error" in x or x.get("timed_out"):
                    raise RuntimeError(f"{mode} on {path} failed: {x}")
                x["rows_per_s"] = rows / x["seconds"]
                key = {"read_csv": "bare", "read_csv_all": "bare_all", "facts": "pipeline"}
                r[key.get(mode, mode)] = x
                peak = x.get("peak_rss_mib", x.get("peak_pss_mib"))
                print(f"[{rows:,}] {mode}: {x['seconds']:.2f} s, "
                      f"{_fmt_rate(x['rows_per_s'])} rows/s, peak {peak:,.0f} MiB", flush=True)
            r["ratio"] = r["pipeline"]["rows_per_s"] / r["bare"]["rows_per_s"]
            results.append(r)
        if not args.skip_assemble:
            for rows in sorted(int(x) for x in args.assemble_rows.split(",")):
                path, _ = mrconso_file(data_dir, rows, args.seed)
                x = run_child("assemble", path, args, scratch, timeout=args.assemble_timeout)
                x["rows"] = rows
                if "output_rows" in x:
                    x["rows_per_s"] = rows / x["seconds"]
                assemble.append(x)
                print(f"[{rows:,}] assemble: " + ("timed out" if x.get("timed_out") else
                                                  f"{x['seconds']:.1f} s"), flush=True)
                if x.get("timed_out") or x.get("error"):
                    break
        text = print_report(results, assemble)
        total = time.perf_counter() - t_total
        print(f"\ntotal runtime {total:.0f} s", flush=True)
        meta = {"command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]),
                "total_seconds": total, "python": platform.python_version(),
                "pyarrow": pa.__version__, "cpus": os.cpu_count(),
                "ram_gib": psutil.virtual_memory().total / 2**30,
                "memory_metric": {"bare": "VmHWM (peak RSS) of the single reading process",
                                  "pipeline": "peak over time of summed PSS of driver + Ray "
                                              "system processes + Ray workers"}}
        try:
            import ray

            meta["ray"] = ray.__version__
        except ImportError:
            pass
        (out / "ingest_throughput.json").write_text(json.dumps(
            {"meta": meta, "results": results, "assemble": assemble, "report": text},
            indent=1, default=str))
        chart = write_chart(results, out)
        print(f"wrote {out / 'ingest_throughput.json'}" + (f" and {chart}" if chart else ""))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
