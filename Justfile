# Train on a remote GPU host over SSH. Settings: REMOTE_HOST, REMOTE_PORT, REMOTE_ROOT, REMOTE_KEY,
# REMOTE_JUMP (environment or .env; see .env.example). Every remote recipe is one call into
# `diffusionlm-remote <verb>`; arguments are `key=value` pairs or the verb's --options. `build-kernels` builds
# csrc/ on this machine.

set positional-arguments

# Show every recipe
default:
    @just --list --unsorted

# bootstrap + sync + build + data + sync-env + train: `just auto-train config=<toml> extra="<args>"`
auto-train *args:
    diffusionlm-remote auto-train "$@"

# Idempotent host setup: run/data/env dirs under REMOTE_ROOT, tmux, uv, just, nvitop (safe twice)
bootstrap-remote *args:
    diffusionlm-remote bootstrap "$@"

# Push the working tree (git-visible files) to REMOTE_ROOT/src (rsync, or tar when rsync is missing)
sync *args:
    diffusionlm-remote sync "$@"

# Create/refresh REMOTE_ROOT/.venv and install the project (REMOTE_VENV_SYSTEM_SITE=1: no downloads)
build-remote *args:
    diffusionlm-remote build "$@"

# Prepare tokenizer/shards the config needs on the host: `just data-remote config=<toml> [--shards]`
data-remote *args:
    diffusionlm-remote data "$@"

# Upload env/wandb.env (WANDB_API_KEY) as a 0600 file; the secret never appears on a command line
sync-env *args:
    diffusionlm-remote sync-env "$@"

# Start training in tmux, print the run name: `just train config=<toml> extra="<args>" [run=NAME] [launcher=ddp]`
train *args:
    diffusionlm-remote train "$@"

# Run a project tool on the host: `just infer args="--set inference.checkpoint=runs/<run>/final"`
infer *args:
    diffusionlm-remote infer "$@"

# GPU monitor on the host (nvitop, else nvidia-smi)
nvitop:
    diffusionlm-remote nvitop

# Attach to the training tmux session (detach with Ctrl-b d): `just attach-train [run=NAME]`
attach-train *args:
    diffusionlm-remote attach "$@"

# Stop a training session, asks first: `just kill-train [run=NAME] [--yes]`
kill-train *args:
    diffusionlm-remote kill-train "$@"

# Runs on the host with state, checkpoint count and whether final/ exists
list-runs:
    diffusionlm-remote list-runs

# Pull a file or directory back, resumable: `just fetch any_file=runs/<run> [dest=DIR]`
fetch *args:
    diffusionlm-remote fetch "$@"

# Tail a run's console log: `just logs [run=NAME] [lines=100] [--follow]`
logs *args:
    diffusionlm-remote logs "$@"

# Jetson (JETSON_HOST, JETSON_PORT, JETSON_USER, JETSON_ROOT, JETSON_KEY; docs/jetson.md): tree + bundle there,
# venv, kernels built for sm_87 and parity-checked: `just deploy-jetson bundle=bundles/<name>`
deploy-jetson *args:
    diffusionlm-remote deploy-jetson "$@"

# Bench a deployed bundle on the Jetson, JSON fetched back: `just bench-jetson bundle=<name> [output=PATH] [args="..."]`
bench-jetson *args:
    diffusionlm-remote bench-jetson "$@"

# Compiled kernels, csrc/ into csrc/build/ (CUDA sm_87;sm_90): `just build-kernels [--arch 8.7] [--check-cuda-source]`
build-kernels *args:
    python3 -m diffusionlm.ops.build_kernels "$@"
