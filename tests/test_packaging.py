"""The package as a user installs it: a wheel in a fresh virtual environment, away from
this checkout, runs the console command and finds its presets and bundled data."""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_command_runs_from_a_wheel_in_a_fresh_venv(tmp_path):
    source, wheels, env = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv"
    # Built from a copy: setuptools builds in the source tree and leaves build/ there.
    shutil.copytree(ROOT / "biolord_ray", source / "biolord_ray",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", *map(str, wheels.glob("biolord_ray-*.whl"))],
                   check=True, capture_output=True, timeout=300)
    # The dependencies are this environment's (installing them again would download GBs).
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    shown = subprocess.run([str(env / "bin" / "biolord-ray"), "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert all(command in shown.stdout for command in ("run", "ingest", "generate", "train",
                                                       "evaluate", "report"))
    loaded = subprocess.run(
        [str(python), "-c", "import biolord_ray, biolord_ray.config as c\n"
         "from biolord_ray.evaluation.benchmark_files import BUNDLED\n"
         "assert all(path.exists() for _, path in BUNDLED.values())\n"
         "print(biolord_ray.__file__)\n"
         "print(*c.available_presets())\n"
         "c.load_config('tiny'); c.load_config('paper', ['kg.path=/tmp'])\n"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    module, presets = loaded.stdout.splitlines()
    assert module.startswith(str(env))  # the installed copy, not this checkout
    assert presets.split() == ["medium", "paper", "tiny"]
