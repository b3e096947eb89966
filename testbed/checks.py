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
