"""Loading a sentence-transformers model, and embedding texts with it (in process or on Ray
Data actors). Shared by every stage that encodes: training, targets, evaluation, soup."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from biolord_ray.models import resolve_model

log = logging.getLogger(__name__)

# Where an exported model lives inside a platform checkpoint or stage output directory.
EXPORT_SUBDIR = "model"
# Texts per call of an encoder actor. sentence-transformers sorts a call's texts by length
# before batching, and a batch costs its longest text times its size: the fewer calls, the
# fewer batches padded to a long definition. The embedded default's 3,207 teacher texts on
# one CPU thread: 39 s in calls of 512, 23 s of 2048, 20 s in one call.
ENCODER_CALL_TEXTS = 8192


def sentence_model_dir(spec: str, cache_dir: str | None = None,
                       trust_remote_code: bool = False) -> str:
    """The directory to load for ``spec``: a sentence-transformers model, a plain transformers
    model (loaded with mean pooling), or a platform checkpoint holding one in ``model/``."""
    path = Path(resolve_model(spec, cache_dir, trust_remote_code))
    if not (path / "modules.json").exists() and (path / EXPORT_SUBDIR / "modules.json").exists():
        path = path / EXPORT_SUBDIR
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a model directory (no modules.json or config.json; "
                                f"a platform checkpoint keeps its model in {EXPORT_SUBDIR}/)")
    return str(path)


def load_sentence_model(model_dir: str, device: str | None = None,
                        trust_remote_code: bool = False):
    from sentence_transformers import SentenceTransformer

    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(model_dir, device=device, trust_remote_code=trust_remote_code)


class Embedder:
    """Unit-length embeddings of texts with one model.

    Small text sets are embedded in this process with ``model``; sets of ``ray_min_texts`` or
    more are spread over Ray Data actors that each load ``model_dir`` (``map_batches`` with a
    callable class), which is how hundreds of thousands of UMLS names get embedded on a cluster.
    """

    def __init__(self, model, model_dir: str | None = None, batch_size: int = 64,
                 ray_min_texts: int = 20_000, concurrency: int = 1, num_gpus: float = 0,
                 bf16_autocast: bool = False):
        self.model = model
        # Encode under torch.autocast(bf16), as a model trained in bf16-mixed runs its forward.
        self.bf16_autocast = bf16_autocast
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.ray_min_texts = ray_min_texts
        self.concurrency = concurrency
        self.num_gpus = num_gpus
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        # Tasks share texts (both retrieval tasks search the same name index): each distinct
        # text is embedded once per model, until clear().
        new = sorted(set(texts) - self._cache.keys())
        if new:
            if self.model_dir is not None and len(new) >= self.ray_min_texts:
                vectors = self._embed_on_ray(new)
            else:
                vectors = encode(self.model, new, self.batch_size, self.bf16_autocast,
                                 show_progress_bar=len(new) > 5000)
            self._cache.update(zip(new, vectors.astype(np.float32, copy=False), strict=True))
        return np.stack([self._cache[t] for t in texts])

    def clear(self) -> None:
        """Forget cached embeddings (call it when the model's weights change)."""
        self._cache = {}

    def _embed_on_ray(self, texts: list[str]) -> np.ndarray:
        import pyarrow as pa
        import ray.data

        log.info("embedding %d texts on %d Ray Data actor(s)", len(texts), self.concurrency)
        ds = ray.data.from_arrow(pa.table({"row": np.arange(len(texts)), "text": texts}))
        ds = ds.repartition(max(self.concurrency * 4, len(texts) // 20_000))
        out = encoder_pool(ds, self.model_dir, batch_size=self.batch_size,
                           concurrency=self.concurrency, num_gpus=self.num_gpus,
                           rows_per_call=ENCODER_CALL_TEXTS,
                           bf16_autocast=self.bf16_autocast)
        vectors = np.empty((len(texts), self.model.get_embedding_dimension()),
                           dtype=np.float32)
        for batch in out.iter_batches(batch_format="numpy", batch_size=None):
            vectors[batch["row"]] = batch["embedding"]
        return vectors


def encoder_pool(ds, model_dir: str, *, batch_size: int, concurrency: int, num_gpus: float,
                 rows_per_call: int, actor=None, batch_format: str = "numpy",
                 bf16_autocast: bool = False):
    """``ds`` through a pool of ``concurrency`` encoder actors (``actor``, by default
    ``EncoderActor``: adds an ``embedding`` column), each loading the model once, on
    ``num_gpus`` GPUs each or else one CPU each, called with ``rows_per_call`` rows (the
    encoder sorts each call's texts by length, so larger calls pad less). The one way the
    stages (teacher targets, parallel data, evaluation) build encoder pools."""
    import ray.data

    kwargs = {"model_dir": model_dir, "batch_size": batch_size, "bf16_autocast": bf16_autocast}
    return ds.map_batches(actor or EncoderActor, fn_constructor_kwargs=kwargs,
                          batch_size=rows_per_call,
                          compute=ray.data.ActorPoolStrategy(size=concurrency),
                          num_gpus=num_gpus, num_cpus=None if num_gpus else 1,
                          batch_format=batch_format)


class EncoderActor:
    """A Ray Data actor holding one copy of the model (loaded once, reused for every batch)."""

    def __init__(self, model_dir: str, batch_size: int, bf16_autocast: bool = False):
        # Ray sets OMP_NUM_THREADS to the actor's num_cpus, so torch uses only its share.
        self.model = load_sentence_model(model_dir)
        self.batch_size = batch_size
        self.bf16_autocast = bf16_autocast

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adds an ``embedding`` column (unit length) for the ``text`` column."""
        vectors = encode(self.model, list(batch["text"]), self.batch_size, self.bf16_autocast)
        return {**batch, "embedding": vectors.astype(np.float32)}


def encode(model, texts: list[str], batch_size: int, bf16_autocast: bool = False,
           show_progress_bar: bool = False) -> np.ndarray:
    """Unit-length embeddings of ``texts`` (``model.encode``), optionally under
    ``torch.autocast(bf16)``: how a model trained in bf16-mixed runs its forward pass."""
    import torch

    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16_autocast):
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=show_progress_bar)
