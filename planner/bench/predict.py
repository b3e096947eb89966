"""Predict what a closed-loop serving benchmark measures, row by row.

A row runs one engine instance (aggregated) of the model in the row's layout (TP x
attention DP x EP) on its GPU, with the engine's scheduler (planner.engines), or x prefill
and y decode engines (disaggregated, xPyD) with KV moved between them, driven by
`concurrency` clients that each send a request of ISL prompt tokens for OSL output tokens
and the next one as soon as the last finishes (genai-perf / aiperf / `vllm bench serve
--max-concurrency`). The discrete-event simulator replays that loop step by step on the
shared step-cost model; attention-DP ranks run as separate queues (the engines' DP
balancer spreads requests over them).

Benchmark semantics (docs/validation-silicon.md compares the alternatives on dev.csv):
- steady state: the clients' phases are spread over one request's lifetime (client i
  starts at i/N of it) and each waits an exponential pause of 2% of a lifetime between
  requests (a real client's reaction time varies), so requests do not stay in lock-step;
  each client's first request is warm-up, left out of the means;
- TTFT and TPOT as the clients define them: TTFT = first token - send, TPOT =
  (end-to-end - TTFT) / (output tokens - 1), averaged over requests; TTFT adds the
  engine's front-end time (HTTP, tokenising, first-token streaming: EngineConfig.frontend_s).
"""
from __future__ import annotations

import numpy as np

from planner import catalog
from planner.bench.rows import RowSpec
from planner.plan import Deployment, Policies, Role
from planner.sim.decode import GREEDY, RESERVE_STATIC

REQUESTS_PER_USER = 5          # requests each client sends, the first one warm-up
MIN_REQUESTS = 40
PHASE_SPREAD = 1.0             # clients start spread over this many request lifetimes
THINK_JITTER = 0.02            # mean pause between a client's requests, in request lifetimes
WARMUP = 1                     # requests per client left out of the means
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


def predict_spec(spec: RowSpec, requests_per_user: int = REQUESTS_PER_USER, seed: int = 0) -> dict:
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
    ranks = {r: dep.roles()[r].instances * dep.roles()[r].dp for r in roles}
    dec = perfs[roles[-1]]
    per_rank = max(spec.concurrency / ranks[roles[-1]], 1.0)
    life_s = float(perfs[roles[0]].prefill_time_s(spec.isl)) + spec.osl * float(
        dec.decode_time_s(per_rank, per_rank * (spec.isl + spec.osl / 2)))
    role = spec.decode if spec.disaggregated else spec.coupled
    res = simulate_closed_loop(
        dep, clients=spec.concurrency, requests=max(MIN_REQUESTS, requests_per_user * spec.concurrency),
        prompt_tokens=spec.isl, output_tokens=spec.osl, seed=seed, ramp_s=PHASE_SPREAD * life_s,
        think_s=THINK_JITTER * life_s, think_jitter=True, block_tokens=eng.block_tokens,
        decode_batch_limit=min(role.max_batch, eng.max_seqs), max_prefill_tokens=eng.token_budget,
        coupled_admission=RESERVE_STATIC if eng.admission == "no_evict" else GREEDY, perfect_predictor=True)
    rec = res.records
    done = rec[np.isfinite(rec["finish_s"]) & (rec["request_id"] >= WARMUP * spec.concurrency)]
    if done.empty:
        return out | {"status": "no request finished in simulation"}
    first = done["first_token_s"]
    if spec.disaggregated:
        # the client sees the first token when the decode engine has the KV and admits the
        # request (it streams every token, the prefill's first one included)
        first = np.maximum(first, done["decode_start_s"])
    ttft = first - done["arrival_s"]
    tpot = (done["finish_s"] - first) / max(spec.osl - 1, 1)
    span = float(done["finish_s"].max() - done["arrival_s"].min())
    tok_s = float(done["output_tokens"].sum()) / span if span > 0 else float("nan")
    return out | {"pred_ttft_ms": (float(ttft.mean()) + eng.frontend) * 1e3, "pred_tpot_ms": float(tpot.mean()) * 1e3,
                  "pred_tokens_per_s_per_gpu": tok_s / spec.gpus, "status": "ok"}
