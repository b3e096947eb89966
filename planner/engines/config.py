"""`EngineConfig`: one engine's scheduling settings, defaults per engine, user overrides,
and what the performance model and the simulator take from it."""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from importlib import resources

from planner.errors import InputError
from planner.perf.moe_tables import MOE_KERNELS
from planner.perf.step import CpuCost

ENGINES = ("vllm", "sglang", "trtllm")
SCHEDULES = ("mixed", "prefill_first")         # decodes + prefill chunks in one step | a prefill step pauses decodes
ADMISSIONS = ("on_demand", "reserve", "no_evict")
PREEMPTIONS = ("recompute", "retract", "none")


def _vllm_graph_sizes(max_bs: int) -> tuple[int, ...]:
    return tuple(s for s in (1, 2, 4, *range(8, 8193, 8)) if s <= max_bs)


def _sglang_graph_sizes(max_bs: int) -> tuple[int, ...]:
    return tuple(s for s in (1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 8193, 16)) if s <= max_bs)


def _trtllm_graph_sizes(max_bs: int, padding: bool = False) -> tuple[int, ...]:
    """CudaGraphConfig's batch sizes (tensorrt_llm/llmapi/llm_args.py,
    _generate_cuda_graph_batch_sizes): 1-32, 64, 128 without padding (the default, max
    128); 1, 2, 4, 8-128 by 8 with padding; then powers of two and the max batch itself."""
    sizes = [1, 2, 4, *range(8, 129, 8)] if padding else [*range(1, 33), 64, 128]
    sizes += [1 << i for i in range(8, max(max_bs, 1).bit_length())]
    return tuple(sorted({s for s in sizes if s <= max_bs} | {max(max_bs, 1)}))


GRAPH_RULES = {"vllm": _vllm_graph_sizes, "sglang": _sglang_graph_sizes}


@dataclass(frozen=True)
class EngineConfig:
    name: str = "vllm"
    token_budget: int = 8192          # tokens per step (max_num_batched_tokens / chunked_prefill_size / max_num_tokens)
    max_seqs: int = 1024              # running requests (max_num_seqs / max_running_requests / max_batch_size)
    chunked_prefill: bool = True
    schedule: str = "mixed"
    admission: str = "on_demand"
    preemption: str = "recompute"
    block_tokens: int = 16
    memory_fraction: float = 0.90
    graph_max_batch: int = 512        # decode-only steps up to this batch replay a CUDA graph
    graph_padding: bool = True        # a batch pads up to the next captured size (False: exact sizes only)
    # piecewise graphs: steps with prompt tokens, up to graph_max_batch tokens, replay graphs
    # split at attention, which alone launches eagerly (vLLM V1's torch.compile graphs)
    piecewise_graphs: bool = False
    fp8_kv_when_quantized: bool = False   # an FP8/FP4 checkpoint runs an FP8 KV cache (ModelOpt checkpoints on TRT-LLM)
    kv_cache_dtype: str = ""          # the KV cache's format when set (--kv-dtype; vLLM's --kv-cache-dtype): bf16 | fp8
    fused_quant: bool = False         # activation quantisation fused into the preceding norm (TRT-LLM)
    memory_of_free: bool = False      # memory_fraction is of the memory free after weights (TRT-LLM's KvCacheConfig)
    # CPU time per step; None: the fitted value for this engine (planner/data/engine_fits.csv)
    cpu_per_step_s: float | None = None
    cpu_per_seq_s: float | None = None
    cpu_per_kernel_s: float | None = None   # host launch time per kernel of an eager (non-graph) step
    frontend_s: float | None = None   # per request, added to TTFT: HTTP, tokenising, first-token streaming
    # the same for a disaggregated deployment, whose requests also pass its router (Dynamo's
    # front end, SGLang's router) and the prefill-to-decode handoff; None: the fitted value
    disagg_frontend_s: float | None = None
    overlap: bool = True              # CPU work of the next step overlaps the GPU's (overlap / async scheduler)
    # TensorRT-LLM's attention-DP balance (attention_dp_config enable_balance, timeout_iters,
    # batching_wait_iters): a DP rank holds new prompts until every rank has one (0: off)
    adp_timeout_iters: int = 0
    adp_batching_wait_iters: int = 0
    # SGLang's --scheduler-recv-interval: new requests taken in every this many decode steps
    recv_interval: int = 1
    # TensorRT-LLM's batch waiting (batch_wait_timeout_iters, batch_wait_max_tokens_ratio;
    # default 0, 0: off): without attention DP, while requests are decoding, new prompts wait
    # until the step's prompt + decode tokens reach ratio x max_num_tokens or they have
    # waited this many steps
    batch_wait_iters: int = 0
    batch_wait_ratio: float = 0.0
    # speculative decoding (decode and coupled engines): draft tokens per step (TensorRT-LLM
    # MTP num_nextn_predict_layers, SGLang speculative-num-steps, vLLM num_speculative_tokens;
    # 0: off) and each draft token's chance of acceptance given the one before it (0.85: the
    # lower end of the 85-90% that DeepSeek-V3's report, arXiv 2412.19437 section 5.4.3,
    # measured for its MTP module's second token)
    spec_tokens: int = 0
    spec_acceptance: float = 0.85
    # streaming: responses sent every `stream_interval` decode steps (TensorRT-LLM
    # stream_interval, SGLang --stream-interval; default 1); `first_token_alone` False: the
    # client's first chunk waits for the first interval too (see planner.bench.predict)
    stream_interval: int = 1
    first_token_alone: bool = True
    # the streaming front end (planner.sim.frontend): chunks per second one front-end process
    # sends (SGLang's TokenizerManager, vLLM's API server; None: the fitted value, 0: no
    # limit) and how many such processes share the work (SGLang --tokenizer-worker-num,
    # vLLM --api-server-count; default 1)
    frontend_chunks_per_s: float | None = None
    frontend_workers: int = 1
    # the routed experts' kernel family ("": the fastest measured; "triton": vLLM's Triton
    # fused MoE, what vLLM runs with VLLM_USE_FLASHINFER_MOE_FP8=0 and DeepGEMM's MoE off)
    moe_kernel: str = ""

    def __post_init__(self):
        for name, value, allowed in (("name", self.name, ENGINES), ("schedule", self.schedule, SCHEDULES),
                                     ("kv_cache_dtype", self.kv_cache_dtype, ("", "bf16", "fp16", "fp8")),
                                     ("admission", self.admission, ADMISSIONS),
                                     ("preemption", self.preemption, PREEMPTIONS)):
            if value not in allowed:
                raise InputError(f"engine {name}={value!r} is not one of {', '.join(allowed)}")
        for name in ("token_budget", "max_seqs", "block_tokens"):
            if not int(getattr(self, name)) >= 1:
                raise InputError(f"engine {name} must be >= 1, got {getattr(self, name)}")
        if int(self.batch_wait_iters) < 0 or not 0.0 <= float(self.batch_wait_ratio) <= 1.0:
            raise InputError(f"engine batch_wait_iters must be >= 0 and batch_wait_ratio in [0, 1], got "
                             f"{self.batch_wait_iters} and {self.batch_wait_ratio}")
        if int(self.stream_interval) < 1:
            raise InputError(f"engine stream_interval must be >= 1, got {self.stream_interval}")
        if int(self.frontend_workers) < 1 or not float(self.frontend_chunks_per_s or 0.0) >= 0.0:
            raise InputError(f"engine frontend_workers must be >= 1 and frontend_chunks_per_s >= 0 (0: no limit), "
                             f"got {self.frontend_workers} and {self.frontend_chunks_per_s}")
        if int(self.spec_tokens) < 0 or not 0.0 <= float(self.spec_acceptance) <= 1.0:
            raise InputError(f"engine spec_tokens must be >= 0 and spec_acceptance in [0, 1], got "
                             f"{self.spec_tokens} and {self.spec_acceptance}")
        if self.moe_kernel not in ("", *MOE_KERNELS):
            raise InputError(f"engine moe_kernel={self.moe_kernel!r} is not one of {', '.join(MOE_KERNELS)} "
                             "(or empty: the fastest measured)")
        if not 0.05 <= self.memory_fraction <= 1.0:
            raise InputError(f"engine memory_fraction must be in [0.05, 1], got {self.memory_fraction}")

    @property
    def graph_sizes(self) -> tuple[int, ...]:
        max_bs = min(self.graph_max_batch, self.max_seqs)
        if self.name == "trtllm":
            return _trtllm_graph_sizes(max_bs, self.graph_padding)
        return GRAPH_RULES[self.name](max_bs)

    @property
    def cpu(self) -> CpuCost:
        fit = engine_fits().get(self.name, {})
        return CpuCost(per_step_s=self.cpu_per_step_s if self.cpu_per_step_s is not None else fit.get("per_step_s", 0.0),
                       per_seq_s=self.cpu_per_seq_s if self.cpu_per_seq_s is not None else fit.get("per_seq_s", 0.0),
                       overlap=self.overlap,
                       per_kernel_s=self.cpu_per_kernel_s if self.cpu_per_kernel_s is not None
                       else fit.get("per_kernel_s", 0.0))

    def kv_dtype(self, weight_dtype: str) -> str:
        if self.kv_cache_dtype:
            return self.kv_cache_dtype
        return "fp8" if self.fp8_kv_when_quantized and weight_dtype in ("fp8", "fp8_block", "fp4", "nvfp4") else "bf16"

    @property
    def frontend(self) -> float:
        if self.frontend_s is not None:
            return self.frontend_s
        return engine_fits().get(self.name, {}).get("frontend_s", 0.0)

    @property
    def disagg_frontend(self) -> float:
        if self.disagg_frontend_s is not None:
            return self.disagg_frontend_s
        return engine_fits().get(self.name, {}).get("disagg_frontend_s", self.frontend)

    @property
    def frontend_tokens_per_s(self) -> float:
        """Tokens per second the front end streams to clients (inf: no limit): chunks per
        second x processes x tokens per chunk."""
        chunks = self.frontend_chunks_per_s
        if chunks is None:
            chunks = engine_fits().get(self.name, {}).get("frontend_chunks_per_s", 0.0)
        return chunks * self.frontend_workers * self.stream_interval if chunks > 0 else float("inf")

    def perf_kwargs(self) -> dict:
        """What PerfModel takes from the engine."""
        return {"engine": self.name, "graph_sizes": self.graph_sizes, "graph_padding": self.graph_padding,
                "piecewise_graphs": self.piecewise_graphs, "moe_kernel": self.moe_kernel,
                "cpu": self.cpu,
                "memory_fraction": self.memory_fraction, "token_budget": self.token_budget,
                "max_seqs": self.max_seqs, "fused_quant": self.fused_quant, "memory_of_free": self.memory_of_free,
                "spec_tokens": self.spec_tokens, "spec_acceptance": self.spec_acceptance if self.spec_tokens else 0.0}

    def settings(self) -> dict:
        """The flags to deploy with, in the engine's own names."""
        names = {"vllm": ("max_num_batched_tokens", "max_num_seqs", "gpu_memory_utilization"),
                 "sglang": ("chunked_prefill_size", "max_running_requests", "mem_fraction_static"),
                 "trtllm": ("max_num_tokens", "max_batch_size", "free_gpu_memory_fraction")}[self.name]
        out = dict(zip(names, (self.token_budget, self.max_seqs, self.memory_fraction)))
        if self.recv_interval > 1:
            out["scheduler_recv_interval"] = self.recv_interval
        if self.batch_wait_iters or self.batch_wait_ratio:
            out["batch_wait_timeout_iters"] = self.batch_wait_iters
            out["batch_wait_max_tokens_ratio"] = self.batch_wait_ratio
        if self.stream_interval > 1:
            out["stream_interval"] = self.stream_interval
        if self.frontend_workers > 1:
            out[{"vllm": "api_server_count", "sglang": "tokenizer_worker_num"}.get(self.name, "frontend_workers")] = \
                self.frontend_workers
        if self.spec_tokens:
            out["speculative_decoding"] = (f"{self.spec_tokens} draft tokens per step (MTP), acceptance "
                                           f"{self.spec_acceptance:g} per token")
        if self.adp_timeout_iters:
            out["attention_dp_config"] = (f"enable_balance true, timeout_iters {self.adp_timeout_iters}, "
                                          f"batching_wait_iters {self.adp_batching_wait_iters}")
        return out


# Defaults (sources in planner/engines/defaults.csv):
# - vLLM V1 serving on a >= 70 GiB GPU: one token budget of 8192 per step, running requests
#   (decodes) first then waiting prefills FCFS, chunked; KV blocks of 16 allocated on demand,
#   the newest running request preempted by recompute; 90% of GPU memory; CUDA graphs to 512;
#   async scheduling (from 0.14; version_defaults turns it off for older releases); steps with
#   prompt tokens up to the largest captured size replay piecewise graphs (attention eager).
# - SGLang: a prefill batch (chunked at 8192) runs first and pauses decoding (mixed chunks
#   off); admission reserves a share of each running request's remaining output
#   (new_token_ratio), decodes retracted when memory runs out; page 1; overlap scheduler on.
# - TensorRT-LLM (PyTorch backend): in-flight batching mixes context and generation in one
#   step within max_num_tokens 8192, chunked context off; GUARANTEED_NO_EVICT reserves a
#   request's full prompt + output at admission, so nothing is preempted; blocks of 32;
#   90% of free memory; overlap scheduler on; CUDA graphs for decode batches of exactly
#   1-32, 64 or 128 (no padding: any other batch runs eagerly; graph_padding and a larger
#   graph_max_batch are cuda_graph_config's enable_padding and max_batch_size).
DEFAULTS = {
    "vllm": EngineConfig(piecewise_graphs=True),
    "sglang": EngineConfig(name="sglang", token_budget=8192, max_seqs=1024, chunked_prefill=True,
                           schedule="prefill_first", admission="reserve", preemption="retract", block_tokens=1,
                           memory_fraction=0.88, graph_max_batch=256, overlap=True),
    "trtllm": EngineConfig(name="trtllm", token_budget=8192, max_seqs=2048, chunked_prefill=False, schedule="mixed",
                           admission="no_evict", preemption="none", block_tokens=32, memory_fraction=0.90,
                           graph_max_batch=128, graph_padding=False, fp8_kv_when_quantized=True, fused_quant=True,
                           memory_of_free=True, overlap=True),
}
ALIASES = {"tensorrt-llm": "trtllm", "trt-llm": "trtllm", "tensorrt_llm": "trtllm", "vllm-v1": "vllm"}


def engine_config(name: str = "vllm", version: str | None = None, gpu=None, tp: int = 1,
                  **overrides) -> EngineConfig:
    """The engine's defaults, for `version` where they changed between versions (None or an
    unparsable version such as a nightly: the newest) and for the `gpu` (a GpuSpec) it runs
    on at `tp` where they depend on its memory, with `overrides` on top."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DEFAULTS:
        raise InputError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    known = {f.name for f in fields(EngineConfig)}
    bad = set(overrides) - known
    if bad:
        raise InputError(f"unknown engine setting(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(known))}")
    base = replace(DEFAULTS[key], **version_defaults(key, version))
    if gpu is not None:
        base = replace(base, **gpu_defaults(key, version, gpu, tp))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _release(version: str | None) -> tuple[int, ...] | None:
    """(major, minor, patch) of a release string ("0.12.0", "1.2.0rc6.post2"), None otherwise."""
    import re
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(version or "").strip())
    return tuple(int(x or 0) for x in m.groups()) if m else None


def version_defaults(engine: str, version: str | None) -> dict:
    """Defaults that differ by release (planner/engines/defaults.csv): vLLM's async scheduling
    (the CPU work of the next step overlapping the GPU's) is on from 0.14, off before."""
    rel = _release(version)
    if engine == "vllm" and rel is not None and rel < (0, 14, 0):
        return {"overlap": False}
    return {}


def gpu_defaults(engine: str, version: str | None, gpu, tp: int = 1) -> dict:
    """Defaults that the engine derives from the GPU's memory (planner/engines/defaults.csv):
    vLLM serves with a token budget of 8192 and 1024 running requests on GPUs of >= 70 GiB
    other than A100 (2048 and 256 below), 16384 from 0.28 on GPUs of >= 160 GiB (a stated
    0.28 or later: a benchmark row without a version is older than that tier); SGLang's
    chunked_prefill_size is 2048 / 4096 / 8192 / 16384 by memory tier (< 35, < 60, < 160 GB,
    above), its cuda_graph_max_bs 512 on GPUs over 160 GB or at TP >= 4 on 80 GB+ ones, else
    256; TensorRT-LLM's do not depend on the GPU."""
    mem = float(gpu.memory_gb)
    rel = _release(version)
    if engine == "vllm":
        if mem < 70 or "a100" in gpu.name.lower():
            return {"token_budget": 2048, "max_seqs": 256}
        if mem >= 160 and rel is not None and rel >= (0, 28, 0):
            return {"token_budget": 16384}
        return {}
    if engine == "sglang":
        budget = 2048 if mem < 35 else 4096 if mem < 60 else 8192 if mem < 160 else 16384
        graphs = 512 if mem > 160 or (tp >= 4 and mem >= 80) else 256
        return {"token_budget": budget, "graph_max_batch": graphs}
    return {}


def config_from_dict(d: dict | None, where: str = "plan") -> EngineConfig:
    if not d:
        return DEFAULTS["vllm"]
    if isinstance(d, str):
        return engine_config(d)
    try:
        return EngineConfig(**d)
    except TypeError as e:
        raise InputError(f"{where}: malformed engine settings ({e})") from None


def as_dict(cfg: EngineConfig) -> dict:
    return asdict(cfg)


@lru_cache(maxsize=1)
def engine_fits() -> dict[str, dict]:
    """{engine: {per_step_s, per_seq_s, per_kernel_s, frontend_s, disagg_frontend_s,
    frontend_chunks_per_s (0: no limit), fitted_on}}
    from planner/data/engine_fits.csv (empty where not fitted yet; no disaggregated front end
    where the engine had no disaggregated rows to fit it on)."""
    try:
        text = resources.files("planner").joinpath("data", "engine_fits.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out = {}
    for r in csv.DictReader(text.splitlines()):
        out[r["engine"]] = {"per_step_s": float(r["per_step_s"]), "per_seq_s": float(r["per_seq_s"]),
                            "per_kernel_s": float(r.get("per_kernel_s") or 0.0),
                            "frontend_s": float(r["frontend_s"]), "fitted_on": r["fitted_on"]}
        if r.get("disagg_frontend_s"):
            out[r["engine"]]["disagg_frontend_s"] = float(r["disagg_frontend_s"])
        out[r["engine"]]["frontend_chunks_per_s"] = float(r.get("frontend_chunks_per_s") or 0.0)
    return out
