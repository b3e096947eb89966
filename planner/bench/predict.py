"""Predict what a closed-loop serving benchmark measures, row by row.

A row runs one engine instance (aggregated) of the model in the row's layout (TP x
attention DP x EP) on its GPU, with the engine's scheduler (planner.engines), or x prefill
and y decode engines (disaggregated, xPyD) with KV moved between them, driven by
`concurrency` clients that each send a request of about ISL prompt tokens for about OSL
output tokens and the next one as soon as the last finishes. The discrete-event simulator
replays that loop step by step on the shared step-cost model; attention-DP ranks run as
separate queues (the engines' DP balancer spreads requests over them).

The benchmark client is the one behind the rows of ../shared/silicon/dev.csv: InferenceMAX's
benchmark_serving.py (vLLM's, SemiAnalysisAI/InferenceX utils/bench_serving), run as
`--max-concurrency N --request-rate inf --num-prompts 10N --random-range-ratio 0.8` (every
recipe in benchmarks/ since 2025-10; `--num-warmups 2N` since 2026-01-21, which only leaves the
server idle and warm when the measured run starts):
- all N clients send at once, each its next request as soon as the last one finishes, until
  10 N requests are sent; every request counts, the first burst included (its TTFT is the
  queue of N prompts, which is why a closed loop's TTFT grows with N faster than steady-state
  queueing explains: docs/validation-silicon.md compares the two);
- prompt and output lengths drawn uniformly from [0.8 L, L] (L = ISL, OSL), so the means are
  0.9 L and the clients fall out of step after the first round;
- TTFT and TPOT as the client defines them: TTFT = first token - send, TPOT = (end-to-end -
  TTFT) / (output tokens - 1), averaged over requests; TTFT adds the engine's front-end time
  (HTTP, tokenising, first-token streaming: EngineConfig.frontend_s; for xPyD rows
  EngineConfig.disagg_frontend_s, which also covers the router), and where the engine
  streams every s decode steps without sending the first token alone
  (EngineConfig.first_token_alone False), the s - 1 steps before its first chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner import catalog
from planner.bench.rows import RowSpec
from planner.errors import InputError
from planner.plan import Deployment, Policies, Role
from planner.sim.decode import GREEDY, RESERVE_STATIC


@dataclass(frozen=True)
class Client:
    """A closed-loop benchmark client: `prompts_per_client` x N requests from N clients that
    start together, lengths uniform in [range_ratio L, L]; `rounds` of them simulated (fewer
    to save time, e.g. while fitting: the first burst then keeps its weight 1 /
    prompts_per_client in the means, the later rounds share the rest)."""
    prompts_per_client: int = 10
    range_ratio: float = 0.8
    rounds: int | None = None

    def __post_init__(self):
        if self.prompts_per_client < 1 or not 0.0 < self.range_ratio <= 1.0:
            raise InputError(f"a client sends >= 1 prompt and draws lengths from [r L, L] with 0 < r <= 1, "
                             f"got {self.prompts_per_client} prompts and r = {self.range_ratio}")

    @property
    def simulated(self) -> int:
        return max(1, min(self.rounds or self.prompts_per_client, self.prompts_per_client))

    def lengths(self, length: int, n: int, rng) -> np.ndarray:
        return rng.integers(max(int(length * self.range_ratio), 1), length + 1, size=n)

    def mean(self, values: np.ndarray, first: np.ndarray) -> float:
        """Mean over the benchmark's requests from the simulated ones (`first`: the burst)."""
        w = 1.0 / self.prompts_per_client
        if first.all() or not first.any():
            return float(values.mean())
        return w * float(values[first].mean()) + (1.0 - w) * float(values[~first].mean())


INFERENCEMAX = Client()
KV_LATENCY_S = 1e-4            # per KV transfer, on top of its bytes over the link
# how each engine spreads requests over its attention-DP ranks: vLLM's data-parallel front
# end picks the least-loaded engine (queue and running counts); SGLang's DP controller deals
# round robin (server_args load_balance_method); TensorRT-LLM in turn (its own disaggregated
# router, tensorrt_llm/serve/router.py create_router, is round robin too)
DISPATCH = {"vllm": "least_loaded", "sglang": "round_robin", "trtllm": "round_robin"}
# xPyD rows are router deployments (Dynamo, SGLang's router) that send a request to a decode
# engine with room: rows whose decode slots equal the clients (5 engines x 3 for 15 clients)
# measure no wait for a slot (187 ms TTFT), which dealing in turn to full engines would make
XPYD_DISPATCH = "least_loaded"


def kv_link(spec: RowSpec) -> float:
    """GB/s one prefill rank moves KV to decode at: NVLink when both roles fit one NVLink
    domain, else the GPUs' network (each GPU of the rank its own NIC share)."""
    gpu = catalog.gpu(spec.gpu)
    tp = spec.prefill.tp
    if spec.gpus <= gpu.nvlink_domain:
        return gpu.link_gb_s * tp
    return gpu.network_gbit_s / 8.0 / gpu.nvlink_domain * tp


def deployment(spec: RowSpec) -> Deployment:
    eng = spec.engine
    # TRT-LLM's guaranteed-no-evict admission reserves each request's whole prompt + output:
    # a reservation with exact output lengths (a 1-token bucket, perfect predictor)
    pol = Policies(decode_admission=RESERVE_STATIC if eng.admission == "no_evict" else "greedy",
                   predictor_bucket_tokens=1, predictor_accuracy=1.0,
                   dispatcher=XPYD_DISPATCH if spec.disaggregated else DISPATCH[eng.name])
    common = dict(model=spec.model, chunk_tokens=eng.token_budget, dtype=spec.dtype, moe_dtype=spec.moe_dtype,
                  policies=pol, engine=eng)
    if spec.disaggregated:
        p, d = spec.prefill, spec.decode
        return Deployment(mode="disaggregated", prefill=Role(spec.gpu, p.workers, p.tp, p.dp, p.ep),
                          decode=Role(spec.gpu, d.workers, d.tp, d.dp, d.ep), kv_link_gb_s=kv_link(spec),
                          kv_latency_s=KV_LATENCY_S, **common)
    c = spec.coupled
    mode = "chunked_coupled" if eng.schedule == "mixed" else "coupled"
    return Deployment(mode=mode, coupled=Role(spec.gpu, c.workers, c.tp, c.dp, c.ep), **common)


def predict_spec(spec: RowSpec, client: Client = INFERENCEMAX, seed: int = 0) -> dict:
    """{pred_ttft_ms, pred_tpot_ms, pred_tokens_per_s_per_gpu, source, status} for one row."""
    from planner.sim import simulate_closed_loop
    dep = deployment(spec)
    roles = ("prefill", "decode") if spec.disaggregated else ("coupled",)
    perfs = {r: dep.perf(r) for r in roles}
    out = {"source": perfs[roles[-1]].source_name}
    need = spec.isl + spec.osl
    for r, perf in perfs.items():
        if not perf.fits:
            role = dep.roles()[r]
            return out | {"status": f"weights do not fit {spec.gpu} x {perf.layout.describe()} ({r}: "
                                    f"{role.gpus_per_instance} GPUs)"}
        if perf.kv_capacity_tokens < (spec.isl if r == "prefill" else need):
            return out | {"status": f"one request ({need} tokens) exceeds the {r} KV capacity "
                                    f"({perf.kv_capacity_tokens})"}
    eng = spec.engine
    n = client.simulated * spec.concurrency
    rng = np.random.default_rng(seed)
    role = spec.decode if spec.disaggregated else spec.coupled
    res = simulate_closed_loop(
        dep, clients=spec.concurrency, requests=n, prompt_tokens=client.lengths(spec.isl, n, rng),
        output_tokens=client.lengths(spec.osl, n, rng), seed=seed, block_tokens=eng.block_tokens,
        decode_batch_limit=min(role.max_batch, eng.max_seqs), max_prefill_tokens=eng.token_budget,
        coupled_admission=RESERVE_STATIC if eng.admission == "no_evict" else GREEDY, perfect_predictor=True)
    rec = res.records
    done = rec[np.isfinite(rec["finish_s"])]
    if done.empty:
        return out | {"status": "no request finished in simulation"}
    first = done["first_token_s"].to_numpy()
    if spec.disaggregated:
        # the client sees the first token when the decode engine has the KV and admits the
        # request (it streams every token, the prefill's first one included)
        first = np.maximum(first, done["decode_start_s"].to_numpy())
    arrival, finish = done["arrival_s"].to_numpy(), done["finish_s"].to_numpy()
    steps = np.maximum(done["output_tokens"].to_numpy() - 1, 1)
    if eng.stream_interval > 1 and not eng.first_token_alone:
        # the first chunk leaves with the response of decode step `stream_interval` - 1 after
        # the prompt's (a step: the request's mean time per token, x the tokens a speculative
        # step yields)
        per_step = (finish - first) / steps * perfs[roles[-1]].steps.spec_tokens_per_step
        first = np.minimum(first + (eng.stream_interval - 1) * per_step, finish)
    burst = (done["request_id"] < spec.concurrency).to_numpy()
    ttft = client.mean(first - arrival, burst)
    tpot = client.mean((finish - first) / steps, burst)
    span = float(finish.max() - arrival.min())
    tok_s = float(done["output_tokens"].sum()) / span if span > 0 else float("nan")
    front = eng.disagg_frontend if spec.disaggregated else eng.frontend
    return out | {"pred_ttft_ms": (ttft + front) * 1e3, "pred_tpot_ms": tpot * 1e3,
                  "pred_tokens_per_s_per_gpu": tok_s / spec.gpus, "status": "ok"}
