"""Where the time goes in a validation: request segments (simulated vs measured) and each
measured worker iteration against the performance model's time for the same iteration.

Segments per request, from the shared record schema: queue (arrival -> prefill start),
prefill (prefill start -> first token), hand-off (first token -> decode start: KV transfer
plus the wait for the decode instance's next iteration), decode per token ((finish -
decode start) / (output - 1)). TTFT = queue + prefill; TPOT = (hand-off + decode) / (output - 1).

Iterations (`RunResult.iterations`): a prefill chunk of `size` tokens from `requests`
slices with `context_tokens` cached per new token is compared with
`PerfModel.prefill_time_s(size, context, requests)` (times `prefill_idle_factor` for a
chunk its worker started after sitting idle); a decode
step of batch `size` holding `context_tokens` in total with `decode_time_s(size, context)`.
A ratio above 1 means the engine ran slower in the run than the model says.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENTS = ("queue", "prefill", "handoff", "decode_per_token")
IDLE_GAP_S = 2e-3     # a prefill worker that waited longer than this between chunks was idle


def segments(records: pd.DataFrame) -> dict:
    """{segment: {p50, p90}} in seconds over the finished requests."""
    r = records[np.isfinite(records["finish_s"].astype(float))]
    multi = r["output_tokens"] > 1
    vals = {"queue": r["prefill_start_s"] - r["arrival_s"],
            "prefill": r["first_token_s"] - r["prefill_start_s"],
            "handoff": (r["decode_start_s"] - r["first_token_s"])[multi],
            "decode_per_token": ((r["finish_s"] - r["decode_start_s"]) / (r["output_tokens"] - 1))[multi]}
    out = {}
    for k, v in vals.items():
        v = v.astype(float).to_numpy()
        v = v[np.isfinite(v)]
        out[k] = {"p50": float(np.percentile(v, 50)) if len(v) else None,
                  "p90": float(np.percentile(v, 90)) if len(v) else None}
    return out


def iteration_fit(iterations: list[dict], dep) -> dict:
    """{role: {iterations, p50, p90, time_weighted, busy_s, by_size}}: measured / model."""
    if not iterations:
        return {}
    it = pd.DataFrame(iterations)
    out = {}
    for role, prefix in (("prefill", "p"), ("decode", "d")):
        d = it[it["worker"].astype(str).str.startswith(prefix)]
        if d.empty:
            continue
        pm = dep.perf(role)
        if role == "prefill":
            reqs = d["requests"] if "requests" in d else pd.Series(1, index=d.index)
            model = np.array([pm.prefill_time_s(int(c), float(k), max(int(r), 1))
                              for c, k, r in zip(d["size"], d["context_tokens"], reqs)])
            if "start_s" in d and pm.prefill_idle_factor != 1.0:
                model = model * np.where(_after_idle(d), pm.prefill_idle_factor, 1.0)
        else:
            model = np.array([pm.decode_time_s(int(b), float(t)) for b, t in zip(d["size"], d["context_tokens"])])
        secs = d["seconds"].to_numpy(float)
        ratio = secs / np.maximum(model, 1e-12)
        by = {}
        if role == "decode":
            for b in sorted(set(d["size"])):
                m = (d["size"] == b).to_numpy()
                by[int(b)] = {"iterations": int(m.sum()), "measured_s": float(np.median(secs[m])),
                              "model_s": float(np.median(model[m])), "ratio": float(np.median(ratio[m]))}
        out[role] = {"iterations": len(d), "p50": float(np.median(ratio)), "p90": float(np.percentile(ratio, 90)),
                     "time_weighted": float(secs.sum() / model.sum()), "busy_s": float(secs.sum()), "by_size": by}
    return out


def _after_idle(d: pd.DataFrame) -> np.ndarray:
    """Per prefill iteration: did its worker sit idle before it (a gap over IDLE_GAP_S
    since its previous chunk ended, or its first)? As the simulator charges
    `prefill_idle_factor`."""
    out = np.zeros(len(d), dtype=bool)
    for _, g in d.groupby("worker"):
        g = g.sort_values("start_s")
        prev_end = (g["start_s"] + g["seconds"]).shift(1)
        idle = (g["start_s"] - prev_end).fillna(np.inf) > IDLE_GAP_S
        out[d.index.get_indexer(g.index)] = idle.to_numpy()
    return out


def render(table: dict) -> str:
    lines = []
    seg = table.get("segments")
    if seg:
        lines.append("segments (ms)      simulated p50/p90      measured p50/p90")
        for k in SEGMENTS:
            s, m = seg["simulated"][k], seg["measured"][k]

            def f(v):
                return "-" if v is None else f"{v * 1e3:.2f}"
            lines.append(f"  {k:<17}{f(s['p50']):>9} /{f(s['p90']):>8}    {f(m['p50']):>9} /{f(m['p90']):>8}")
    fit = table.get("iterations")
    for role, v in (fit or {}).items():
        lines.append(f"{role} iterations: {v['iterations']}, measured/model p50 {v['p50']:.2f}, p90 {v['p90']:.2f}, "
                     f"time-weighted {v['time_weighted']:.2f}")
        if v["by_size"]:
            lines.append("  by batch: " + ", ".join(
                f"{b}: {x['measured_s'] * 1e3:.1f}/{x['model_s'] * 1e3:.1f} ms ({x['iterations']})"
                for b, x in list(v["by_size"].items())[:12]))
    return "\n".join(lines)
