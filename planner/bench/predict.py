"""Predict what a closed-loop serving benchmark measures, row by row.

A row runs one engine instance (aggregated) of the model at the row's TP on its GPU, with
the engine's scheduler (planner.engines), driven by `concurrency` clients that each send a
request of ISL prompt tokens for OSL output tokens and the next one as soon as the last
finishes (genai-perf / aiperf / `vllm bench serve --max-concurrency`). The discrete-event
simulator replays that loop step by step on the shared step-cost model.

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

from planner.bench.rows import RowSpec
from planner.plan import Deployment, Policies, Role
from planner.sim.decode import GREEDY, RESERVE_STATIC

REQUESTS_PER_USER = 5          # requests each client sends, the first one warm-up
MIN_REQUESTS = 40
PHASE_SPREAD = 1.0             # clients start spread over this many request lifetimes
THINK_JITTER = 0.02            # mean pause between a client's requests, in request lifetimes
WARMUP = 1                     # requests per client left out of the means


def deployment(spec: RowSpec) -> Deployment:
    eng = spec.engine
    mode = "chunked_coupled" if eng.schedule == "mixed" else "coupled"
    # TRT-LLM's guaranteed-no-evict admission reserves each request's whole prompt + output:
    # a reservation with exact output lengths (a 1-token bucket, perfect predictor)
    pol = Policies(decode_admission=RESERVE_STATIC if eng.admission == "no_evict" else "greedy",
                   predictor_bucket_tokens=1, predictor_accuracy=1.0)
    return Deployment(mode=mode, model=spec.model, chunk_tokens=eng.token_budget,
                      coupled=Role(spec.gpu, 1, spec.tp), dtype=spec.dtype, policies=pol, engine=eng)


def predict_spec(spec: RowSpec, requests_per_user: int = REQUESTS_PER_USER, seed: int = 0) -> dict:
    """{pred_ttft_ms, pred_tpot_ms, pred_tokens_per_s_per_gpu, source, status} for one row."""
    from planner.sim import simulate_closed_loop
    dep = deployment(spec)
    perf = dep.perf("coupled")
    out = {"source": perf.source_name}
    if not perf.fits:
        return out | {"status": f"weights do not fit {spec.gpu} x TP{spec.tp} ({perf.weight_bytes / 1e9:.0f} GB)"}
    need = spec.isl + spec.osl
    if perf.kv_capacity_tokens < need:
        return out | {"status": f"one request ({need} tokens) exceeds the KV capacity ({perf.kv_capacity_tokens})"}
    eng = spec.engine
    life_s = float(perf.prefill_time_s(spec.isl)) + spec.osl * float(
        perf.decode_time_s(spec.concurrency, spec.concurrency * (spec.isl + spec.osl / 2)))
    res = simulate_closed_loop(
        dep, clients=spec.concurrency, requests=max(MIN_REQUESTS, requests_per_user * spec.concurrency),
        prompt_tokens=spec.isl, output_tokens=spec.osl, seed=seed, ramp_s=PHASE_SPREAD * life_s,
        think_s=THINK_JITTER * life_s, think_jitter=True, block_tokens=eng.block_tokens,
        decode_batch_limit=min(spec.max_batch, eng.max_seqs), max_prefill_tokens=eng.token_budget,
        coupled_admission=RESERVE_STATIC if eng.admission == "no_evict" else GREEDY, perfect_predictor=True)
    rec = res.records
    done = rec[np.isfinite(rec["finish_s"]) & (rec["request_id"] >= WARMUP * spec.concurrency)]
    if done.empty:
        return out | {"status": "no request finished in simulation"}
    ttft = done["first_token_s"] - done["arrival_s"]
    tpot = (done["finish_s"] - done["first_token_s"]) / max(spec.osl - 1, 1)
    span = float(done["finish_s"].max() - done["arrival_s"].min())
    tok_s = float(done["output_tokens"].sum()) / span if span > 0 else float("nan")
    return out | {"pred_ttft_ms": (float(ttft.mean()) + eng.frontend) * 1e3, "pred_tpot_ms": float(tpot.mean()) * 1e3,
                  "pred_tokens_per_s_per_gpu": tok_s / spec.tp, "status": "ok"}
