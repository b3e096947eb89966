"""What the launcher checks before it starts any process, so that a setting no worker can
run with is a one-line error (exit 2) in the launcher, not a traceback from a worker after
seconds of start-up: the device, the KV backend on that device, a weights folder."""
from __future__ import annotations

import re
from pathlib import Path

from planner.errors import InputError

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def check_device(device: str) -> str:
    m = _DEVICE.match(str(device).strip().lower())
    if not m:
        raise InputError(f"--device {device!r}: use cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        if index is not None:
            raise InputError(f"--device {device!r}: cpu takes no index")
        return "cpu"
    import torch
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise InputError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}" if index is not None else "cuda"


def check_backend(backend: str, device: str) -> None:
    import torch.distributed as dist
    on_gpu = device.startswith("cuda")
    if backend in ("nccl", "cuda-ipc") and not on_gpu:
        raise InputError(f"--kv-backend {backend} moves GPU memory; it needs --device cuda "
                         "(on a CPU use shm, gloo or reference)")
    if backend in ("gloo", "nccl") and not dist.is_available():
        raise InputError(f"--kv-backend {backend}: this torch has no torch.distributed; use shm or reference")
    if backend == "nccl" and not dist.is_nccl_available():
        raise InputError("--kv-backend nccl: this torch is built without NCCL; use cuda-ipc or gloo")


def check_weights_dir(folder) -> Path:
    """A save_pretrained folder of an OPT model: config.json (an OPT config) and weights."""
    import json
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass a folder written by save_pretrained (config.json plus weights)")
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: no config.json; pass a folder written by save_pretrained "
                         "(config.json plus model.safetensors or pytorch_model.bin)")
    if not (list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))):
        raise InputError(f"{folder}: no *.safetensors or *.bin weight files")
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{folder}/config.json: not a JSON config ({str(e)[:200]})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "opt":
        kind = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise InputError(f"{folder}: model_type {kind!r}; the testbed runs OPT models")
    return folder


LOCAL_WORKERS_PER_CPU = 4      # more local worker processes than this per CPU is refused
MEMORY_SHARE = 0.8             # of this machine's RAM the local workers' weights may take


def check_local_workers(n: int) -> None:
    import os
    cap = max(8, LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1))
    if n > cap:
        raise InputError(f"{n} local worker processes on a machine with {os.cpu_count()} CPUs (at most {cap}): "
                         "run fewer with --prefill/--decode, or start some on other hosts (--remote-prefill/-decode)")


def check_model_memory(config, dtype: str, processes: int, device: str) -> None:
    """Every local CPU worker holds its own copy of the weights: refuse a run whose copies
    cannot fit in this machine's memory (a scaled-up --hidden or --max-context) instead of
    letting the kernel kill workers half way through start-up."""
    import os
    if device.startswith("cuda") or processes < 1:
        return
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    params = layers * (4 * h * h + 2 * h * config.ffn_dim) + (vocab + config.max_position_embeddings + 2) * h
    nbytes = params * {"fp32": 4, "fp16": 2, "bf16": 2}.get(dtype, 4) * processes
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > MEMORY_SHARE * ram:
        raise InputError(f"the model's weights take {nbytes / 2**30:,.1f} GiB over {processes} process(es), more than "
                         f"{MEMORY_SHARE:.0%} of this machine's {ram / 2**30:,.1f} GiB; use fewer --layers, a smaller "
                         "--hidden or --max-context, or fewer workers")
