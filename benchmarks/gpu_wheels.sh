#!/usr/bin/env bash
# The wheels a bare GPU machine lacks to run benchmarks/gpu_checks.sh, fetched here (where pip reaches the
# package registries) into .whl/ (ignored by git), to travel with the working tree (64 MiB in all).
#
# The GPU machine's image has Python 3.12 with torch, transformers, accelerate, peft, tokenizers, numpy,
# pandas, pyarrow, scikit-learn, sacrebleu, jinja2, rich, typer and pyyaml, but not TRL, Optuna, MLflow,
# datasets, lm-eval or pydantic. The list below is what a sweep, a trial and a report import beyond that
# image (traced with an import audit hook over a 2-trial toy sweep), at the versions installed in .venv
# (what the tests ran with). Left out to fit: the full `mlflow` wheel (its UI; mlflow-skinny holds the
# tracking store), `kernels` (transformers uses it only if present) and packages imported by nothing a
# sweep runs (lm-eval's and MLflow's other extras).
#
#     benchmarks/gpu_wheels.sh [PYTHON_VERSION]      # 3.12 (the GPU image's) unless given
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${1:-3.12}
PACKAGES=(
    trl optuna alembic sqlalchemy mako colorlog datasets dill multiprocess lm-eval plotly
    pydantic pydantic-core annotated-types typing-inspection
    mlflow-skinny mlflow-tracing databricks-sdk google-auth cryptography cffi cachetools fastapi starlette sqlparse
    opentelemetry-api opentelemetry-proto opentelemetry-sdk opentelemetry-semantic-conventions importlib-metadata
    httpx2 httpcore2 truststore chardet wcwidth
)
# each at the version this checkout's .venv runs (and its tests pass with)
read -r -a pins <<<"$(.venv/bin/python -c 'import importlib.metadata as m, sys
print(" ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' "${PACKAGES[@]}")"
platforms=()
for tag in manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    "${platforms[@]}" --platform any -d .whl "${pins[@]}"
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/ (the working tree that travels: 64 MiB at most)"
