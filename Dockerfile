# The salad-ray GPU image: CUDA, the official vLLM (which brings its CUDA build of torch), Kokoro,
# espeak-ng, and the project. Used by k8s/ and clusters/.
#
#   docker build -t ghcr.io/your-org/salad-ray:0.1.0-gpu .
#   docker push ghcr.io/your-org/salad-ray:0.1.0-gpu
#
# Models are not baked in: they come from the Hugging Face hub (HF_HOME on the shared /runs volume
# keeps one copy) or from local directories named in the run config.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_USAGE_STATS_ENABLED=0

# espeak-ng: CPU TTS and Kokoro's phonemizer fallback; libsndfile1: audio files;
# fortunes and dict-gcide: the offline text of the local preset (kept so the image runs it too).
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential git curl ca-certificates \
        espeak-ng libsndfile1 fortunes dict-gcide \
    && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
RUN uv venv --python python3.11 /opt/venv

WORKDIR /opt/salad-ray
# Dependencies first (cached while only the code changes): the official vLLM and Kokoro extras.
COPY pyproject.toml README.md ./
COPY tools/en_core_web_sm_alias tools/en_core_web_sm_alias
COPY salad_ray/__init__.py salad_ray/__init__.py
RUN uv pip install ".[vllm,kokoro,tracking]" ./tools/en_core_web_sm_alias
COPY salad_ray salad_ray
COPY services services
RUN uv pip install --no-deps . && python -m compileall -q salad_ray

# Ray's ports: GCS, dashboard / job server, client, Serve.
EXPOSE 6379 8265 10001 8000
CMD ["bash"]
