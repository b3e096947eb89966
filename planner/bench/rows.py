"""Benchmark rows: the configuration columns of a serving benchmark (those of
`../shared/silicon/dev.csv`) read into what the planner predicts, or the reason it cannot.

A row names a model (Hugging Face id), a GPU system, an engine and version, a precision,
a mode (`agg`: one engine instance; `disagg`: x prefill + y decode engines), ISL / OSL and
the closed-loop concurrency, and the parallel layout (tp/pp/ep/attention-dp columns, with
`prefill_` / `decode_` prefixes for disaggregated rows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from planner import catalog
from planner.bench.xpyd_recipes import recipe_deployment
from planner.engines.config import EngineConfig, engine_config
from planner.errors import InputError
from planner.perf.layers import Layout, layout_problem
from planner.perf.step import unsupported

REQUIRED = ("model_path", "system", "backend", "precision", "mode", "isl", "osl", "concurrency")
MEASURED = ("silicon_ttft_ms", "silicon_tpot_ms")
MTP_IMAGE = "1.2.0rc6.post3"   # InferenceMAX's speculative DeepSeek TensorRT-LLM runs on B200 (_trtllm_recipe)
MTP_PR_RUN = "2026-01-14"      # ... and the run of the pull request that added them (_trtllm_recipe)
XPYD_SGLANG_PREFILL_TOKENS = 32768   # srt-slurm's SGLang prefill batches (resolve)
BUDGET_FLOOR_FROM = "2026-01-21"   # the plain DeepSeek TensorRT-LLM recipes' max_num_tokens floor of 8192
LAYOUT = ("tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "batch_size")


@dataclass(frozen=True)
class RoleSpec:
    """One engine role: `workers` engines, each TP `tp` x attention-DP `dp` GPUs with expert
    parallelism `ep`, running at most `max_batch` requests per DP rank."""
    tp: int
    dp: int
    ep: int
    workers: int
    max_batch: int
    squared_from: str = ""    # the file's columns, where they recorded the GPU count squared
    recipe: str = ""          # the recipe the deployment was read from, where the row did not record it
    spec_tokens: int = 0      # the recipe's draft tokens per decode step (speculative decoding)

    @property
    def gpus(self) -> int:
        return self.workers * self.tp * self.dp

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.dp, self.ep)

    def describe(self) -> str:
        s = f"tp{self.tp}" + (f" dp{self.dp}" if self.dp > 1 else "") + (f" ep{self.ep}" if self.ep > 1 else "")
        s = (f"{self.workers} x " if self.workers > 1 else "") + s
        return s + (f" (file: {self.squared_from})" if self.squared_from else "")


@dataclass(frozen=True)
class RowSpec:
    id: str
    model: str                # catalog name
    gpu: str                  # catalog name
    engine: EngineConfig
    dtype: str                # weight / GEMM format
    kv_dtype: str
    isl: int
    osl: int
    concurrency: int
    coupled: RoleSpec | None = None       # aggregated rows
    prefill: RoleSpec | None = None       # disaggregated (xPyD) rows
    decode: RoleSpec | None = None
    moe_dtype: str = ""                   # routed experts' format ("": as dtype)

    @property
    def disaggregated(self) -> bool:
        return self.prefill is not None

    def describe(self) -> str:
        mtp = f", MTP {self.engine.spec_tokens}" if self.engine.spec_tokens else ""
        if self.coupled:
            return self.coupled.describe() + mtp
        s = f"prefill {self.prefill.describe()} + decode {self.decode.describe()}" + mtp
        return s + (f" (recipe: {self.prefill.recipe})" if self.prefill.recipe else "")

    @property
    def gpus(self) -> int:
        return self.coupled.gpus if self.coupled else self.prefill.gpus + self.decode.gpus


def read_rows(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a CSV of benchmark rows ({str(e)[:200]})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; needs {', '.join(REQUIRED)} "
                         "(and tp_size, batch_size for aggregated rows)")
    if "id" not in df.columns:
        df.insert(0, "id", [f"row{i + 1}" for i in range(len(df))])
    return df


def _num(row, col, default=None):
    v = row.get(col, default)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return default
    return v


def moe_format(moe_quant_mode, dtype: str) -> str:
    """The routed experts' format from a row's moe_quant_mode ("": the GEMM format)."""
    mode = str(moe_quant_mode or "").lower()
    return {"fp8_block": "fp8_block", "fp8": "fp8", "nvfp4": "fp4", "fp4": "fp4", "w4a16_mxfp4": "mxfp4",
            "mxfp4": "mxfp4", "int4_wo": "int4", "int4": "int4", "bf16": "bf16", "bfloat16": "bf16"}.get(mode, dtype)


def _as_checkpoint(fmt: str, checkpoint: str) -> str:
    """A row's "fp8" on a block-wise FP8 checkpoint (DeepSeek, Qwen3-FP8, MiniMax) is the
    checkpoint's format: engines load the weights as stored, with their block scales."""
    return checkpoint if fmt == "fp8" and checkpoint == "fp8_block" else fmt


def squared_layout(tp: int, dp: int, moe_tp: int, ep: int) -> tuple[int, int, int] | None:
    """(tp, dp, ep) of an engine of G GPUs whose columns recorded G x G GPUs, else None.

    Some rows of aiconfigurator's silicon file write an engine of TP G with EP G as
    tp_size G*G, moe_tp_size G, moe_ep_size G (or attention_dp_size G*G for TensorRT-LLM's
    attention-DP engines), and vLLM's as tp_size G, attention_dp_size G, moe_ep_size G*G:
    their measurements repeat those of the G-GPU rows (116 of dev.csv's 341 such rows to the
    last digit; the vLLM ones within run-to-run noise), while a G*G-GPU engine would be 2-8
    nodes of 8 GPUs. Read them as the G-GPU engine (`planner predict --literal-layout` keeps
    the columns as written)."""
    g = math.isqrt(tp * dp)
    if g < 2 or g * g != tp * dp:
        return None
    if moe_tp == ep == g and 1 in (tp, dp):
        return (g, 1, g) if dp == 1 else (1, g, g)
    if moe_tp == 1 and tp == dp == g and ep == g * g:
        return g, 1, g
    return None


def _role(row, prefix: str, default_batch: int, literal: bool = False) -> RoleSpec | str:
    tp = int(_num(row, f"{prefix}tp_size", 1))
    ep = int(_num(row, f"{prefix}moe_ep_size", 1))
    moe_tp = int(_num(row, f"{prefix}moe_tp_size", 1))
    # no attention-DP column: the MoE group's GPUs beyond the attention TP are DP ranks
    # (vLLM's --data-parallel-size: a TP 1 row with MoE TP 2 runs on 2 GPUs)
    dp = int(_num(row, f"{prefix}attention_dp_size", max(moe_tp * ep // tp, 1)))
    pp = int(_num(row, f"{prefix}pp_size", 1))
    if pp != 1:
        return f"pipeline parallelism (pp {pp}): not modelled yet"
    if prefix and _num(row, f"{prefix}num_workers") is None:
        return _recipe_role(row, prefix)
    workers = int(_num(row, f"{prefix}num_workers", 1))
    batch = int(_num(row, f"{prefix}batch_size", default_batch))
    if min(tp, dp, ep, workers, batch) < 1:
        return f"{prefix or 'layout '}sizes must be >= 1"
    squared = None if literal else squared_layout(tp, dp, moe_tp, ep)
    note = ""
    if squared:
        note = f"tp_size {tp}, attention_dp_size {dp}, moe_tp_size {moe_tp}, moe_ep_size {ep}"
        batch *= dp // squared[1]       # the batch column is per attention-DP rank as written
        tp, dp, ep = squared
    conc = int(row["concurrency"])
    if batch * dp * workers < conc <= batch * tp * dp * workers:
        batch *= tp     # a batch recorded per GPU (NVIDIA model-card runs: batch x GPUs = concurrency)
    elif not prefix and conc > batch * tp * dp * workers:
        # an NVIDIA model-card row (Qwen3-32B NVFP4, 416 clients on TP 2 at batch 13, TTFT
        # 0.7 s) ran replicas it does not record
        return (f"{conc} clients exceed the batch of {batch} per GPU on the row's {tp * dp * workers} GPU(s): "
                "more engine replicas ran than the row records")
    return RoleSpec(tp, dp, ep, workers, batch, note)


def _recipe_role(row, prefix: str) -> RoleSpec | str:
    """The role as the benchmark's recipe deployed it, for xPyD rows without worker counts
    (planner.bench.xpyd_recipes)."""
    found = recipe_deployment(str(row["backend"]), str(row["system"]), str(row["precision"]), int(row["isl"]),
                              int(row["osl"]), int(_num(row, "prefill_tp_size", 1)),
                              int(_num(row, "prefill_moe_ep_size", 1)), int(_num(row, "decode_tp_size", 1)),
                              int(row["concurrency"]))
    if isinstance(found, str):
        return found
    r = found.prefill if prefix == "prefill_" else found.decode
    return RoleSpec(r.tp, r.dp, r.ep, r.workers, r.max_batch, recipe=found.file.rsplit("/", 1)[-1],
                    spec_tokens=found.spec_tokens)


def gemm_format(precision: str, gemm_quant_mode) -> str:
    """The GEMM kernel family a row's weights run: bf16, fp8 (per-tensor), fp8_block, fp4."""
    mode = str(gemm_quant_mode or "").lower()
    if mode in ("fp8_block", "fp8_blockwise"):
        return "fp8_block"
    if mode in ("nvfp4", "fp4", "mxfp4") or precision == "fp4":
        return "fp4"
    if mode == "fp8" or precision == "fp8":
        return "fp8"
    if precision in ("int4", "w4a16", "awq", "gptq"):
        return "int4"
    return "bf16"


def _trtllm_recipe(model: str, isl: int, osl: int, roles: dict, mode: str = "agg", version: str | None = None,
                   gpu: str = "", measured: str = "", concurrency: int = 1) -> dict:
    """Engine settings of InferenceMAX's TensorRT-LLM recipe for this model where they are
    not the library's:
    - Llama-3.1-70B (benchmarks/70b_fp{4,8}_{b200,h200}_trt_slurm.sh, last at 026d16b82^)
      serves with --max_num_tokens 16384, and at 1024 / 1024 below TP 8 with batch waiting
      (batch_wait_timeout_iters 20, batch_wait_max_tokens_ratio 0.9): its rows there measure
      TTFT flat at about 20 decode steps from 4 to 16 clients (TP 2: 231 ms at TPOT 8.9 ms),
      its TP 8 and 1024 / 8192 rows a plain prefill (58-62 ms).
    - DeepSeek-R1 / V3 aggregated (benchmarks/single_node/dsr1_fp{4,8}_{b200,h200}_trt*.sh,
      since 2025-09) stream every 10 steps (stream_interval 10, no postprocess workers), and
      their rows measure the client's first chunk about 9 decode steps after the prefill:
      at 4-16 clients the TTFT left after the predicted prefill is a median 9.2-9.9 measured
      TPOTs for DeepSeek-V3 on B200 and H200, 9-10 for R1 without MTP, 20-55 (9-10 steps of
      2-3 tokens) for R1's speculative runs, while gpt-oss (stream_interval 20 with 4
      postprocess workers, num_postprocess_workers: its front end's processes) and SGLang's
      DeepSeek recipes (--stream-interval 10 or 30) show none.
    - Their B200 speculative twins (dsr1_fp{4,8}_b200_trt_mtp.sh: MTP with 3 draft tokens,
      1 with attention DP) ran the 1.2.0rc6.post3 image and the plain runs 1.2.0rc6.post2
      (.github/configs/nvidia-master.yaml dsr1-fp{4,8}-b200-trt-mtp, since InferenceX
      5d517074c / 0aae52d4c, 2026-02-05/06; no other DeepSeek config runs post3): the
      version tells the twins apart, which the rows' columns do not. Before, both ran
      1.1.0rc2.post2: the speculative recipes came with InferenceX pull request 392
      (bf3456727, merged 2026-01-15), whose runs are the rows measured 2026-01-14: on H200
      they reach 128 and 256 clients with attention DP at 1024 / 1024, a sweep only the
      speculative config has (.github/configs/nvidia-master.yaml dsr1-fp8-h200-trt-mtp; the
      plain one stops at 64), and on every GPU their TPOT is the plain runs' / 1.2-1.9
      (H200 1024 / 8192 at 64 clients: 19.4 ms, the plain run of 2026-01-28 32.2; B200 FP8
      at 4 clients 7.8, plain 14.6). Other rows of that image read as plain.
    - Their token budget (--max_num_tokens, chunked prefill off): room for one prompt of
      the ISL beside a full decode batch, (B (1 + draft tokens) + ISL + 64) rounded up to 64,
      B the clients (per attention-DP rank in the speculative recipes); the plain recipes
      keep at least 8192 from 64af5a771 (2026-01-21): before, a step took one prompt.
    - gpt-oss (benchmarks/gptoss_fp4_{b200,h200}_trt*.sh, since 2025-10): --max_num_tokens
      20000, and on H200 the checkpoint's own KV format (kv_cache_config dtype auto: 16 bit
      for gpt-oss's MXFP4 weights; B200's recipe sets fp8)."""
    if model.startswith("deepseek-") and mode == "agg":
        out = {"stream_interval": 10, "first_token_alone": False}
        dp = max(r.dp for r in roles.values())
        batch, spec = concurrency, 0
        if str(version) == MTP_IMAGE or measured == MTP_PR_RUN:
            spec = out["spec_tokens"] = 1 if dp > 1 else 3
            batch = max(1, concurrency // dp)
        budget = -(-(batch * (1 + spec) + isl + 64) // 64) * 64
        out["token_budget"] = budget if spec or "" < measured < BUDGET_FLOOR_FROM else max(budget, 8192)
        return out
    if model == "gpt-oss-120b":
        return {"stream_interval": 20, "frontend_workers": 4, "token_budget": 20000,
                **({"kv_cache_dtype": "bf16"} if gpu.startswith("h200") else {})}
    if model != "llama-3.1-70b":
        return {}
    out = {"token_budget": 16384}
    if isl == 1024 and osl == 1024 and max(r.tp * r.dp for r in roles.values()) < 8:
        out.update(batch_wait_iters=20, batch_wait_ratio=0.9)
    return out


def _format(dtype: str) -> str:
    """A weight format's family as recipes name it: fp4 (NVFP4 / MXFP4), fp8 (per-tensor or
    block-wise), else the format itself."""
    return "fp4" if dtype in ("fp4", "nvfp4") else "fp8" if dtype.startswith("fp8") else dtype


def _sglang_recipe(model: str, dtype: str, gpu: str, gpus: int, measured: str = "") -> dict:
    """Settings of InferenceMAX's SGLang recipes (benchmarks/single_node/fixed_seq_len/
    dsr1_fp{4,8}_*, qwen3.5_{bf16,fp4,fp8}_*, deprecated/glm5_fp{4,8}_*, each as of the row's
    run): the scheduler streams every 10 (DeepSeek FP4, FP8 on H200), 30 (DeepSeek FP8 on B200
    / B300, GLM-5, Qwen3.5 BF16 / FP4, and FP8 on B200 until 92985b879 of 2026-04-13) or 50
    decode steps (Qwen3.5 FP8 on H200 / B300 and later on B200; --stream-interval, first
    token alone), Qwen3.5 runs six front-end processes (--tokenizer-worker-num 6), and the
    FP8 / FP4 checkpoints an FP8 KV cache (--kv-cache-dtype fp8_e4m3) except DeepSeek's and
    GLM-5's on H200, which keep the defaults (16-bit KV; GLM-5: every token streamed). A
    prefill batch takes up to min(--chunked-prefill-size, --max-prefill-tokens) prompt
    tokens (SGLang's max_prefill_tokens defaults to 16384): 32768 for DeepSeek FP8 at 8 GPUs
    (8192 at 4), Qwen3.5 (16384 for FP8 on H200 and B300) and GLM-5 FP8 off H200; DeepSeek
    FP4 (16384) and GLM-5 FP4 (16384: 131072-token chunks, the default batch limit) keep
    the Blackwell default; GLM-5 on H200 sets none (8192)."""
    fmt = _format(dtype)
    fp4, quantized = fmt == "fp4", fmt in ("fp4", "fp8")
    h200, b300 = gpu.startswith("h200"), gpu.startswith("b300")
    out = {}
    if model.startswith("deepseek-"):
        out = {"stream_interval": 10 if fp4 or h200 else 30}
        if fmt == "fp8":
            out["token_budget"] = 32768 if gpus >= 8 else 8192
    elif model.startswith("qwen3.5-"):
        late_fp8 = fmt == "fp8" and (h200 or b300 or measured >= "2026-04-13")
        out = {"stream_interval": 50 if late_fp8 else 30, "frontend_workers": 6,
               "token_budget": 16384 if fmt == "fp8" and (h200 or b300) else 32768}
    elif model == "glm-5" and (fp4 or not h200):
        out = {"stream_interval": 30, "token_budget": 16384 if fp4 else 32768}
    if out and quantized and (model.startswith("qwen3.5-") or not h200):
        out["kv_cache_dtype"] = "fp8"
    return out


# InferenceMAX's vLLM recipes where they set more than vLLM's defaults, each from the commit
# that set it (benchmarks/single_node/<name>.sh in SemiAnalysisAI/InferenceX): (model,
# format, GPU) -> [(first run date, settings)], the newest not after the row's run applies.
# The April 2026 Blackwell recipes: --kv-cache-dtype fp8, --max-cudagraph-capture-size 2048,
# --max-num-batched-tokens 2 x ISL, --stream-interval 20 (the first token alone, vLLM PR
# 27869), --gpu-memory-utilization 0.90
# --enable-expert-parallel (the MoE layers' experts split over the TP x DP GPUs) is
# "expert_parallel": the March MiniMax recipes passed it for any EP_SIZE >= 1, so for every
# run, whatever EP size the row names, until bddbf4031 made it EP_SIZE > 1. The first B200
# recipe (f342df18e) also turned FlashInfer's FP8 MoE and DeepGEMM's MoE off
# (VLLM_USE_FLASHINFER_MOE_FP8=0, VLLM_MOE_USE_DEEP_GEMM=0): vLLM's Triton fused MoE runs
# the experts; its pull request's next runs (a33dc2198) dropped that and took an FP8 KV
# cache and --stream-interval 20. gpt-oss: CUDA graphs captured to 2048 tokens and a token
# budget of 8192 in every recipe, 512 running requests on B200, an FP8 KV cache on B200 from
# b23086972 (the H200 recipe's Marlin MXFP4 MoE, VLLM_MXFP4_USE_MARLIN=1, has no kernel
# table for gpt-oss's shapes: the fastest measured kernel stands in).
_APRIL = {"kv_cache_dtype": "fp8", "graph_max_batch": 2048, "budget_x_isl": 2, "stream_interval": 20,
          "memory_fraction": 0.90}
_MINIMAX_MARCH = {"memory_fraction": 0.95, "block_tokens": 32, "expert_parallel": True}
_GPT_OSS = {"graph_max_batch": 2048, "token_budget": 8192}
VLLM_RECIPES = {
    ("minimax-m2.5", "fp8", "b200"): [("", {**_MINIMAX_MARCH, "moe_kernel": "triton"}),              # f342df18e
                                      ("2026-03-27", {**_MINIMAX_MARCH, "kv_cache_dtype": "fp8",
                                                      "stream_interval": 20}),                         # a33dc2198
                                      ("2026-04-03", {**_APRIL, "block_tokens": 32})],                 # bddbf4031
    ("minimax-m2.5", "fp8", "h200"): [("", {"memory_fraction": 0.95}),                               # a36346339
                                      ("2026-03-13", {"memory_fraction": 0.95, "expert_parallel": True})],  # 5e2c705d3
    ("gpt-oss-120b", "fp4", "b200"): [("", {**_GPT_OSS, "max_seqs": 512}),                            # 69844b2ea
                                      ("2026-01-05", {**_GPT_OSS, "max_seqs": 512,
                                                      "kv_cache_dtype": "fp8"})],                      # b23086972
    ("gpt-oss-120b", "fp4", "h200"): [("", _GPT_OSS)],                                                # 69844b2ea
    # created with the April settings (rows older than the commit are its pull request's runs)
    ("minimax-m2.5", "fp4", "b200"): [("", _APRIL)],                                                  # 79bd988e9
    ("minimax-m2.5", "fp8", "b300"): [("", {**_APRIL, "block_tokens": 32})],                          # 340d7854c
    ("minimax-m2.5", "fp4", "b300"): [("", _APRIL)],                                                  # 22d0f12f7
    ("kimi-k2.5", "fp4", "b200"): [("2026-04-20", _APRIL)],                                           # 6c3acebfa
}


def _vllm_recipe(model: str, dtype: str, gpu: str, measured: str, isl: int) -> dict:
    """Engine settings of the InferenceMAX vLLM recipe a row ran (VLLM_RECIPES, by its run
    date; vLLM's defaults otherwise)."""
    out = {}
    for since, settings in VLLM_RECIPES.get((model, _format(dtype), gpu), ()):
        if measured >= since:
            out = dict(settings)
    if "budget_x_isl" in out:
        out["token_budget"] = out.pop("budget_x_isl") * isl
    return out


def resolve(row: dict, engine_overrides: dict | None = None, literal_layout: bool = False) -> RowSpec | str:
    """The row as a RowSpec, or a one-line reason it cannot be predicted (literal_layout:
    take the parallel sizes as written, see squared_layout)."""
    try:
        model = catalog.model(str(row["model_path"]))
    except InputError:
        return f"model {row['model_path']} not in the catalog"
    why = unsupported(model)
    if why:
        return why
    try:
        gpu = catalog.gpu(str(row["system"]))
    except InputError:
        return f"unknown GPU system {row['system']}"
    dtype = _as_checkpoint(gemm_format(str(row["precision"]), _num(row, "gemm_quant_mode")), model.weight_format)
    moe_dtype = _as_checkpoint(moe_format(_num(row, "moe_quant_mode"), dtype), model.weight_format) \
        if model.experts else ""
    conc = int(row["concurrency"])
    roles = {}
    mode = str(row["mode"])
    if mode not in ("agg", "disagg"):
        return f"mode {mode!r} is not agg or disagg"
    for name, prefix in ((("coupled", ""),) if mode == "agg" else (("prefill", "prefill_"), ("decode", "decode_"))):
        r = _role(row, prefix, conc, literal_layout)
        if isinstance(r, str):
            return r
        why = layout_problem(model, r.layout)
        if why:
            return why
        roles[name] = r
    overrides = engine_overrides or {}
    try:
        engine = engine_config(str(row["backend"]), _num(row, "backend_version"), gpu=gpu,
                               tp=(roles.get("coupled") or roles["decode"]).tp, **overrides)
    except InputError as e:
        return str(e)
    if engine.name == "sglang" and gpu.fp4_tflops and "recv_interval" not in overrides and (
            model.name.startswith(("deepseek-", "qwen3.5-")) or (model.name == "glm-5" and dtype in ("fp4", "nvfp4"))):
        # SGLang's Blackwell deployment recipes (InferenceMAX single_node dsr1_* and
        # qwen3.5_* on B200 / B300, glm5_fp4_*; not glm5_fp8_*, none on H200) take new
        # requests in every 10 decode steps, every 30 from 16 clients
        # (--scheduler-recv-interval; default 1)
        engine = replace(engine, recv_interval=30 if conc >= 16 else 10)
    measured = str(row.get("measured") or "")     # the run's date: which recipe version ran
    if engine.name == "sglang":
        lead = roles.get("coupled") or roles["decode"]
        recipe = _sglang_recipe(model.name, dtype, gpu.name, lead.tp * lead.dp, measured)
        if mode != "agg":
            # xPyD rows ran srt-slurm's recipes, whose prefill engines take prefill batches
            # of --max-prefill-tokens / --chunked-prefill-size 32768 (B200 and H200 8k / 1k;
            # some H200 1k / 1k ones 65536-163840: a batch of 1k prompts is rarely that
            # large at their loads)
            recipe["token_budget"] = XPYD_SGLANG_PREFILL_TOKENS
    elif engine.name == "vllm":
        recipe = _vllm_recipe(model.name, dtype, gpu.name, measured, int(row["isl"]))
    else:
        recipe = _trtllm_recipe(model.name, int(row["isl"]), int(row["osl"]), roles, mode,
                                _num(row, "backend_version"), gpu.name, measured, conc)
    if engine.name == "trtllm":
        # benchmark configurations set what TensorRT-LLM's deployment recipes set (the
        # library defaults are for plain serving): CUDA graphs captured up to the engine's
        # max batch, padded (cuda_graph_config enable_padding + max_batch_size; default 1-32,
        # 64, 128 exact), and with attention DP the balance that holds a rank's new prompts
        # until every rank has one, for at most 60 steps (attention_dp_config enable_balance
        # true, timeout_iters 60, batching_wait_iters 0; default off)
        engine = replace(engine, graph_max_batch=max(r.max_batch for r in roles.values()), graph_padding=True,
                         **({"adp_timeout_iters": 60, "adp_batching_wait_iters": 0}
                            if "adp_timeout_iters" not in overrides else {}))
    if recipe.pop("expert_parallel", False):
        roles = {name: replace(r, ep=r.tp * r.dp) for name, r in roles.items()}
        why = next(filter(None, (layout_problem(model, r.layout) for r in roles.values())), None)
        if why:
            return why
    engine = replace(engine, **{k: v for k, v in recipe.items() if k not in overrides})
    if mode == "disagg" and roles["decode"].spec_tokens and "spec_tokens" not in overrides:
        engine = replace(engine, spec_tokens=roles["decode"].spec_tokens)
    return RowSpec(id=str(row["id"]), model=model.name, gpu=gpu.name, engine=engine, dtype=dtype,
                   kv_dtype=engine.kv_dtype(dtype), isl=int(row["isl"]), osl=int(row["osl"]), concurrency=conc,
                   moe_dtype=moe_dtype, **roles)
