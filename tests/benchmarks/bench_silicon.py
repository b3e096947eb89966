"""Accuracy of `planner predict` on the real benchmark rows of ../shared/silicon/dev.csv,
in-sample and leave-one-system-out (LOSO: the engines' fitted CPU and front-end times
re-fitted without the held-out system, then that system predicted). Run:

    .venv/bin/python tests/benchmarks/bench_silicon.py [--out docs/validation-silicon.md] [--figures docs/figures]

Prints (and writes) Markdown: per system x engine x model x mode, TTFT and TPOT median and
p90 absolute % error and median signed error, in-sample next to LOSO, the row statuses,
and log-log plots of predicted against measured. Takes ~10 minutes on 2 cores (each LOSO
fold re-fits three engines by simulation).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "silicon" / "dev.csv"
SYSTEMS = ("h200_sxm", "b200_sxm", "b300_sxm")
KEYS = ["system", "backend", "model_path", "mode"]

METHOD = """# Predictions against real GPU benchmarks (../shared/silicon/dev.csv)

`planner predict` on the 3,400 development rows: H200, B200 and B300; vLLM, SGLang and
TensorRT-LLM; dense and MoE; aggregated and xPyD disaggregated. Every row comes back with a
prediction or a status saying why it has none (never dropped, never guessed).

How a row is predicted (planner/bench, planner/engines, planner/perf; docs/perf-model.md):
- one engine instance of the model in the row's layout (attention TP x attention-DP ranks x
  expert parallelism; the predictions' `layout` column). 341 aggregated rows record an
  engine's GPU count squared (tp_size 16 with moe_tp 4 x moe_ep 4, tp_size 64 with 8 x 8,
  vLLM tp 4 x dp 4 with moe_ep 16): 116 of them repeat a TP4 / TP8 EP row's measurements to
  the last digit, the vLLM ones the TP EP rows' within run-to-run noise, and a 16-64-GPU
  engine would span 2-8 HGX nodes, so they are predicted as the G-GPU engine
  (planner.bench.rows.squared_layout; `--literal-layout` keeps the columns). Or x prefill
  and y decode engines for xPyD rows (where a row does not record its worker counts, the
  deployment of the InferenceMAX srt-slurm recipe it ran: planner/bench/xpyd_recipes.py)
  with the KV moved
  over NVLink inside one NVLink domain, else over the GPUs' NICs; its steps costed op by op
  from the measured kernel tables of that GPU and engine (aiconfigurator-core 0.12.0,
  kernel-level only: GEMM, attention, MLA, fused MoE, gated delta-net, all-reduce; the
  newest release's tables: docs/perf-model.md says why); each MoE table read by
  what its token count counts, the layer's tokens or each EP rank's, told from its own 1 x 1
  and 1 x E rows: planner/perf/moe_tables.py, and for the experts a batch routed at random
  touches, not the balanced tables' all, and on ep GPUs the busiest rank's pairs and
  experts (planner/perf/routing.py: random, group-limited as the config says); an FP4 kernel an
  engine's tables lack from another engine's table of the same GPU: vLLM's gpt-oss on
  Blackwell runs TensorRT-LLM-gen's MXFP4 x MXFP8 kernel); weights in the row's GEMM
  format (fp8 per-tensor, fp8 block-wise as the checkpoint stores it, nvfp4), routed
  experts in its MoE format; GEMM tables read monotone in the token count (isotonic
  median regression along m: single slow points such as vLLM's B200 FP8 per-tensor GEMMs
  at m = 1-16, 2-3x their neighbours, dropped); KV in FP8 where the engine runs an FP8 KV cache; each kernel
  no table measures (norms, RoPE, activations, routing, casts) at least 0.8 us, the
  graph-replay floor measured on an H200 (docs/gpu-results.md, which also checks the
  tables' GEMMs and attention against real H200 forward steps); MiniMax-M2's q / k norm over
  all heads one more all-reduce a layer at TP > 1 (of each token's two variances, as vLLM
  runs it);
- the engine's scheduler in the simulator (planner/engines/config.py, sources in
  planner/engines/defaults.csv): vLLM V1 and TensorRT-LLM mix decodes and prefill chunks in
  one step under a token budget, SGLang runs a prefill batch first and pauses decoding;
  vLLM allocates KV on demand and preempts by recompute, TensorRT-LLM reserves a request's
  prompt + output before its prefill (guaranteed no evict); token budgets and graph limits
  the engines derive from the GPU's memory (SGLang: 16384 tokens and graphs to 512 on B200
  and B300); CUDA graphs per engine
  (TensorRT-LLM rows: captured up to the row's max batch and padded, as its deployment
  recipes set cuda_graph_config; its library default is exactly 1-32, 64, 128); vLLM's
  async scheduling from 0.14; each attention-DP rank its own queue, requests dealt to ranks
  as each engine does by default (vLLM least loaded, SGLang and TensorRT-LLM round robin),
  TensorRT-LLM's ranks holding new prompts until every rank has one or 60 steps passed (the
  attention_dp_config balance its DeepSeek deployment recipes set), and its batch waiting
  where the model's recipe sets it (Llama-3.1-70B at 1k/1k below TP 8: new prompts wait up
  to 20 steps while others decode, max_num_tokens 16384); SGLang on Blackwell
  taking new requests in every 10 decode steps, every 30 from 16 clients (its B200 / B300
  recipes' --scheduler-recv-interval; H200 recipes: every step) and its DeepSeek, Qwen3.5 and
  GLM-5 recipes streaming every 10-50 steps, the first token alone (--stream-interval;
  Qwen3.5's with six front-end processes, --tokenizer-worker-num 6), with an FP8 KV cache
  on Blackwell (and Qwen3.5's on H200), and prefill batches of min(--chunked-prefill-size,
  --max-prefill-tokens) tokens (32768 for DeepSeek FP8 at 8 GPUs and most Qwen3.5 / GLM-5
  recipes); vLLM's recipes by the row's run date (planner/bench/rows.py VLLM_RECIPES):
  MiniMax-M2.5 and Kimi-K2.5 FP4 from April 2026 with an FP8 KV cache, graphs to 2048,
  2 x ISL tokens a step and a chunk every 20 tokens; MiniMax-M2.5's March recipes with the
  experts split over every GPU (--enable-expert-parallel for any EP size) and the first B200
  one with vLLM's Triton fused MoE (FlashInfer's and DeepGEMM's off: that kernel family's
  newest table); gpt-oss with graphs to 2048 tokens (FP8 KV on B200 from January 2026);
  vLLM V1's piecewise CUDA graphs; TensorRT-LLM's gpt-oss recipes' 20000 tokens a step (H200:
  16-bit KV); prompts sharing a step (SGLang's prefill batches, mixed steps, prefill
  instances' chunks) each attend over their own tokens; TensorRT-LLM's DeepSeek
  recipes streaming every 10 steps with the client's first chunk 9 decode steps after the
  prefill (their rows show it: planner/bench/rows.py _trtllm_recipe); xPyD rows' routers send
  a request to a decode engine with room; the client's first token is when the decode
  engine admits the request; xPyD recipes that decode speculatively (TensorRT-LLM MTP,
  SGLang EAGLE with DeepSeek's MTP layer; k = 1-3 draft tokens per step) run it, as do the
  aggregated TensorRT-LLM DeepSeek rows of InferenceMAX's MTP configs (told from their
  plain twins by the image they ran, 1.2.0rc6.post3, or by the run date of the pull request
  that added them, 2026-01-14; 3 draft tokens, 1 with attention DP), with the token budget
  their scripts set (room for one ISL prompt beside the batch; the plain ones at least
  8192 from 2026-01-21):
  k draft passes of one layer + LM head and a verify pass of k + 1 tokens per sequence per
  step, each draft token accepted with probability 0.85 given the one before (the low end
  of DeepSeek-V3's report for its MTP module, arXiv 2412.19437; not fitted to these rows),
  a step that mixes prompt chunks with them charged its prompt part and their verify rows
  and drafts over the tokens a step yields;
- the benchmark as its client runs it (planner/bench/predict.py Client): InferenceMAX's
  benchmark_serving.py, the harness of every recipe on this grid of ISL / OSL / clients:
  N clients start at once on an idle server, each sends its next request as the last
  finishes, 10 N requests in all, prompt and output lengths uniform in [0.8 L, L], every
  request counted, the first burst's queue included; TTFT includes the engine's front end;
- fitted on these rows, per engine, six parameters (planner/engines/fit.py; on 100 rows
  per engine: every kind x system x model x concurrency band once, at least 20 rows of each
  kind of deployment, the rest at random; the objective per kind (dense, MoE, xPyD) the
  median |log| error of TPOT plus that of TTFT, averaged over the kinds, so a time only one
  kind reveals is set by its rows, such as SGLang's host time per sequence, which binds a
  small dense model at hundreds of clients and hides under a MoE model's GPU step): CPU seconds
  per step and per sequence in a step (added to the GPU time, or overlapped with it for
  engines with an overlap / async scheduler), seconds per kernel launched by a step run
  without a CUDA graph (a floor under prefill steps: the model's kernel count, from its
  layer kinds, x this), front-end seconds per request, one for aggregated rows and one
  for xPyD rows (whose requests also pass the router and the prefill-to-decode handoff), and
  the chunks per second the streaming front end sends (planner/sim/frontend.py: one process
  per engine streams each step's tokens, tokens per chunk the stream interval; past its rate
  tokens queue FIFO in front of the clients, who see every token late, the first one too,
  and send their next request when they have the last; no limit unless rows reveal one).
  Nothing else is fitted to these rows: the kernel tables are inputs, the roofline curves
  are fitted to kernel tables only, and the speculative acceptance is DeepSeek's published one.
- leave-one-system-out (LOSO): the six engine parameters re-fitted without one system's
  rows, then that system predicted.

Known gaps (what the figures below reflect):
- The rows do not name their client; their grid (1k/1k, 1k/8k, 8k/1k at 4-512 clients) and
  engines are InferenceMAX's, whose harness is the one modelled. Its first burst is why
  measured TTFT grows with concurrency in step with TPOT (vLLM, 1024/1024: TTFT / TPOT about
  8 at up to 32 clients, 15 at 256) where a steady-state loop's falls (25 to 5). Against the
  steady-state loop used before (clients' phases spread over one request lifetime, a 2%
  pause, first requests left out), each engine's front-end time re-chosen for each, on all
  rows: TTFT median error dense 34% -> 15%, MoE 37% -> 30%, xPyD 68% -> 49%, TPOT unchanged;
  with the four engine parameters refitted (docs at commit 886df22), dense TTFT 35% -> 17%
  in-sample and 35% -> 24% leave-one-system-out (p90 108% -> 74%), MoE 39% -> 30%, xPyD 69%
  -> 48% (LOSO), and TensorRT-LLM's front end 190 -> 45 ms. The NVIDIA model-card rows
  (Llama-3.1-8B FP8 on vLLM at 100-2000 output tokens, DeepSeek-R1 / V3.1 and Qwen3-32B NVFP4
  on TensorRT-LLM) come from another client and run far from this one (Llama-3.1-8B: TPOT
  predicted 1.5-4x its 8-23 ms; the NVFP4 rows record batch per GPU).
- The engines' CPU and front-end times are fitted within physical bounds and some sit at a
  bound (SGLang's front ends near 200 ms and its CPU times at 0; both engines' xPyD front
  ends at 200 ms): what the step-cost model misses shows as bias. The front-end time stands in for a per-request excess that depends on the
  model: at 4 clients, measured TTFT minus the predicted GPU prefill is 15-60 ms for
  gpt-oss, MiniMax and Llama-3.1-70B on vLLM and TensorRT-LLM but 120-280 ms for DeepSeek,
  GLM-5 and Qwen3.5 on SGLang, so one constant per engine over-predicts gpt-oss-120b's
  TTFT on vLLM B200. DeepSeek's excess on TensorRT-LLM was the same kind of gap until its
  recipes' stream interval was modelled (about 9 decode steps before the first chunk:
  in-sample TTFT of those rows 51-56% -> 22-35% before refitting).
- xPyD rows come from Dynamo + srt-slurm recipes whose client (sa-bench: a warm-up of 2 N
  requests at 250 per second, then 10 N at once, N at a time, lengths in [0.8 L, L]) is
  the one modelled. 583 of them do not record their worker counts: 482 are predicted with
  the deployment of the recipe they ran (planner/data/xpyd_recipes.csv; 139 of them
  speculative), 50 match several recipes with different deployments and 51 none, and are
  not predicted. Where a plain and a speculative recipe both match, the row is read as the
  plain one, yet dev.csv holds both runs under identical columns (DeepSeek-R1 H200
  TensorRT-LLM 8k/1k at 9 clients: TPOT 10.9 ms and 5.6 ms), so half of such rows are
  predicted without their MTP. TTFT is under-predicted on TensorRT-LLM: its decode
  engines stream every 100 steps (stream_interval 100 in the srt-slurm recipes), and the
  first token's path through Dynamo is not modelled.
- vLLM V1's piecewise CUDA graphs (a step with prompt tokens, up to the largest captured
  size, launches only attention eagerly) are modelled since InferenceMAX's April 2026 vLLM
  recipes capture graphs to 2048 tokens and budget 2 x ISL tokens a step, which made a
  1k-prompt step's eager-launch floor (50 us x ~1,300 kernels for MiniMax-M2.5) the cost of
  every prompt step; tried alone earlier (capture to 512, the default) they worsened the
  in-sample objective (0.513 to 0.542): the eager-launch floor also stands in for prefill
  time the tables miss on long prompts.
- Expert-parallel all-to-all (DeepEP) is costed as the gather / scatter of the tokens, and
  routing as uniform at random (no expert hotter than another); SGLang's and vLLM's DP-attention ranks are assumed evenly loaded and
  do not wait for each other's prefills. InferenceMAX ran DeepSeek-R1 on TensorRT-LLM with
  and without MTP at the same layouts and clients, and the rows record no speculative
  column: from February the image tells the twins apart (before it was used, TensorRT-LLM
  DeepSeek B200 TPOT was over-predicted by a median 26%, the MTP rows 1.3-2.4x); before,
  both ran 1.1.0rc2.post2, and the rows of 2026-01-14 (the speculative configs' first run:
  sweeps only they have, TPOT the plain runs' / 1.2-1.9) are read as MTP. Those rows'
  TPOT comes out 30-40% under: 1.1.0rc2's plain steps ran 1.2-1.4x slower than the
  1.3.0rc20 tables (B200 FP8 TP 8 at 4 clients: 14.6 ms on 1.1.0rc2, 10.3 on 1.2.0rc6).
- TensorRT-LLM's B200 / B300 kernel tables time block-FP8 experts only with DeepGEMM,
  while its DeepSeek recipes (from 2026-01-29) and most srt-slurm decode roles run the
  TRTLLM MoE backend (TensorRT-LLM-gen kernels, 2-3x faster at decode sizes as FlashInfer
  times them in SGLang's and vLLM's tables). Read with those kernels, the plain FP8 TP 8
  rows' TPOT comes out 28% under, with DeepGEMM 25% over, and B300 xPyD TTFT 13% -> 22%
  (those tables' EP 8 rows of DeepSeek's experts cost 3-4x their TP 8 rows at prefill
  sizes, TensorRT-LLM's own about 0.3x): each engine's own fastest table is kept.
- Some SGLang B200 FP4 DeepSeek rows with MoE TP (no EP) measure 5-9 s TTFT at 4-128
  clients with a normal TPOT (the same runs with EP: 0.2-1.6 s), which no queueing of the
  recorded layout produces.
- The few NVIDIA model-card rows (DeepSeek-R1 / V3.1 NVFP4, Qwen3-32B NVFP4) record batch
  per GPU and run far from the others (TPOT 85-90 ms at 40-224 clients).
- The SGLang 0.5.6.post2 Llama-3.1-8B rows on H200 (46, with no run date: another sweep)
  stream at most 17-22k tokens per second per engine at 512 clients whatever the TP (TPOT
  23-30 ms at TP 4 and TP 8, whose GPU steps take 10-14 ms), and their TTFT grows with the
  output length (TP 8, 1k prompts: 2.0 / 3.2 / 8.0 s at 500 / 1000 / 2000 tokens out): the
  single front-end process (SGLang's one tokenizer manager, streaming every token) falls
  behind the engine and tokens queue in front of the clients, which the streaming front end
  models (its rate fitted on these rows: no other SGLang row streams a chunk per token, the
  InferenceMAX recipes send one per 10-50 steps). Leaving H200 out leaves no row that reveals
  the rate, so there it stays off and these rows' TTFT is under-predicted as before.
- Long prompts cost more than the kernel tables say on some engines, and the excess is not
  one engine constant: at 4 clients, measured TTFT at 8k prompts minus that at 1k, over the
  predicted difference, is a median 3.0 on SGLang (MoE: DeepSeek FP8 on B200 2.9, on H200
  0.7), 1.3 on vLLM (MiniMax 1.3-2.4, Llama-3.1-70B 1.0-1.5) and 0.8 on TensorRT-LLM (the
  kernel tables' prefill of 8k prompts is 13.7 us a token for DeepSeek FP8 on 8 B200s; SGLang
  measures about 40, TensorRT-LLM 22). An engine-wide prompt-work factor (fit coordinate,
  0.75-3x) was tried: it lowered SGLang's fitted front end from 190 to 80 ms and helped MoE
  rows, but worsened dense and xPyD rows as much, and was dropped. The large front-end times
  stand in for part of this.
- SGLang's Qwen3.5-397B rows at TP 8 (B200, B300, H200) run 28% slower than predicted, those
  at TP 4 as predicted (B200 FP8 at 4 clients: TP 4 6.3 ms, TP 8 8.3 ms measured, where the
  kernel tables make TP 8 faster), and its TP 4 x EP 4 rows 25% slower (9.9 ms): what TP 8
  and EP add beyond the tables' MoE kernels and all-reduce is not known without a GPU.
"""


def _fit_overrides(fits: list[dict]) -> dict:
    return {f["engine"]: {"cpu_per_step_s": f["per_step_s"], "cpu_per_seq_s": f["per_seq_s"],
                          "cpu_per_kernel_s": f.get("per_kernel_s", 0.0),
                          "frontend_s": f["frontend_s"],
                          "disagg_frontend_s": f.get("disagg_frontend_s") if f.get("disagg_frontend_s") is not None
                          else f["frontend_s"],
                          "frontend_chunks_per_s": f.get("frontend_chunks_per_s", 0.0)} for f in fits}


def loso(df: pd.DataFrame, log) -> pd.DataFrame:
    from planner.bench.rows import resolve
    from planner.bench.run import predict_frame
    from planner.engines.fit import fit_all
    parts = []
    for system in SYSTEMS:
        held = df[df["system"] == system]
        if held.empty:
            continue
        if all(isinstance(resolve(r), str) for r in held.to_dict("records")):
            parts.append(predict_frame(held).assign(fit_without=system, fitted_engines=""))  # statuses only
            log(f"LOSO {system}: no row the model covers; statuses only")
            continue
        t0 = time.perf_counter()
        fits = fit_all(df, exclude_system=system, progress=lambda s, sy=system: log(f"  [without {sy}] {s}"))
        # an engine with no training rows outside the held-out system falls back to no fitted times
        over = {e: {"cpu_per_step_s": 0.0, "cpu_per_seq_s": 0.0, "cpu_per_kernel_s": 0.0, "frontend_s": 0.0,
                    "disagg_frontend_s": 0.0, "frontend_chunks_per_s": 0.0} for e in ("vllm", "sglang", "trtllm")}
        over.update(_fit_overrides(fits))
        pred = predict_frame(held, over)
        pred["fit_without"] = system
        pred["fitted_engines"] = ",".join(sorted(f["engine"] for f in fits))
        parts.append(pred)
        log(f"LOSO {system}: {len(held)} rows in {time.perf_counter() - t0:.0f} s")
    return pd.concat(parts) if parts else df.iloc[0:0]


def _pct(x):
    return "-" if x is None or not np.isfinite(x) else f"{x:.0f}%"


def group_table(ins: pd.DataFrame, out: pd.DataFrame, by: list[str]) -> str:
    """One Markdown row per value of `by` (an empty `by`: one row for all)."""
    if not by:
        ins, out, by = ins.assign(rows_="all"), out.assign(rows_="all"), ["rows_"]
    from planner.bench.accuracy import errors, summarize
    ei, eo = errors(ins), errors(out)
    lines = ["| " + " | ".join(by) + " | rows | TTFT med / p90 / signed (in) | TTFT med / p90 / signed (LOSO) "
             "| TPOT med / p90 / signed (in) | TPOT med / p90 / signed (LOSO) |",
             "|" + "---|" * (len(by) + 5)]
    keys = sorted(set(map(tuple, ei[by].astype(str).values)) | set(map(tuple, eo[by].astype(str).values)))
    for key in keys:
        def pick(e):
            m = np.ones(len(e), dtype=bool)
            for c, v in zip(by, key):
                m &= e[c].astype(str).to_numpy() == v
            return e[m]
        gi, go = pick(ei), pick(eo)
        cells = []
        for name in ("ttft", "tpot"):
            for g in (gi, go):
                s = summarize(g[f"err_{name}"]) if len(g) else {"rows": 0}
                cells.append(" / ".join(_pct(s.get(k)) for k in ("median_abs_pct", "p90_abs_pct", "median_signed_pct"))
                             if s["rows"] else "-")
        lines.append("| " + " | ".join(key) + f" | {max(len(gi), len(go))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(ins: pd.DataFrame, out: pd.DataFrame, folder: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for metric, meas, pred in (("ttft", "silicon_ttft_ms", "pred_ttft_ms"), ("tpot", "silicon_tpot_ms", "pred_tpot_ms")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
        for ax, (title, d) in zip(axes, (("in-sample", ins), ("leave-one-system-out", out))):
            d = d[d["status"] == "ok"]
            for (system, backend), g in d.groupby(["system", "backend"]):
                ax.scatter(g[meas], g[pred], s=8, alpha=0.6, label=f"{system} {backend}")
            lo = max(1e-1, float(np.nanmin(d[[meas, pred]].to_numpy()))) if len(d) else 1
            hi = float(np.nanmax(d[[meas, pred]].to_numpy())) if len(d) else 10
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.plot([lo, hi], [lo * 1.2, hi * 1.2], "k:", lw=0.6)
            ax.plot([lo, hi], [lo / 1.2, hi / 1.2], "k:", lw=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{metric.upper()} (ms), {title}")
            ax.set_xlabel("measured")
            ax.set_ylabel("predicted")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        name = f"silicon_{metric}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=str(DEV))
    ap.add_argument("--out", default=None, help="write the Markdown here (e.g. docs/validation-silicon.md)")
    ap.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    ap.add_argument("--predictions", default=None, help="also write every row's in-sample and LOSO predictions (CSV)")
    args = ap.parse_args(argv)
    if not Path(args.rows).is_file():
        print(f"error: {args.rows} not found (../shared/silicon/dev.csv beside the project)", file=sys.stderr)
        return 2
    from planner.bench.rows import read_rows
    from planner.bench.run import predict_frame
    from planner.engines.config import engine_fits

    def log(s):
        print(s, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    df = read_rows(args.rows)
    ins = predict_frame(df, progress=True)
    log(f"in-sample: {len(df)} rows in {time.perf_counter() - t0:.0f} s")
    out = loso(df, log)
    if args.predictions:
        ins.assign(kind="in-sample").to_csv(args.predictions, index=False)
        out.assign(kind="loso").to_csv(args.predictions, mode="a", header=False, index=False)
    figs = plots(ins, out, Path(args.figures))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    from planner.engines.fit import kinds      # the fit's own split of the rows: dense, MoE, xPyD
    dense = lambda d: d[kinds(d) == "dense"]  # noqa: E731
    moe = lambda d: d[kinds(d) == "moe"]  # noqa: E731
    xpyd = lambda d: d[kinds(d) == "xpyd"]  # noqa: E731
    ok_share = float((ins["status"] == "ok").mean())
    status = ins["status"].where(ins["status"] == "ok", "not predicted: " + ins["status"].astype(str).str.slice(0, 90))
    fits = engine_fits()
    md = [METHOD, f"Command: `.venv/bin/python tests/benchmarks/bench_silicon.py --out docs/validation-silicon.md`. "
          f"Date {datetime.date.today()}, commit {commit}, machine {platform.machine()} {platform.node()} "
          f"({len(df)} rows, {time.perf_counter() - t0:.0f} s).", "",
          "Fitted engine parameters (in-sample, planner/data/engine_fits.csv): " + "; ".join(
              f"{e}: {v['per_step_s'] * 1e3:.2f} ms/step + {v['per_seq_s'] * 1e6:.1f} us/seq, eager launches "
              f"{v['per_kernel_s'] * 1e6:.1f} us/kernel, front end "
              f"{v['frontend_s'] * 1e3:.0f} ms"
              + (f", xPyD front end {v['disagg_frontend_s'] * 1e3:.0f} ms" if "disagg_frontend_s" in v else "")
              + (f", streaming front end {v['frontend_chunks_per_s']:.0f} chunks/s"
                 if v.get("frontend_chunks_per_s") else ", streaming front end unlimited")
              + f" (fitted on {v['fitted_on']})" for e, v in fits.items()), "",
          "### Dense aggregated rows (the targets)", "",
          "Targets (issue 11, LOSO): TTFT median <= 20%, p90 <= 50%; TPOT median <= 8%, p90 <= 20%; no system x "
          "engine group worse than 35% (TTFT) or 15% (TPOT) median.", "",
          group_table(dense(ins), dense(out), []), "",
          group_table(dense(ins), dense(out), ["system", "backend"]), "",
          group_table(dense(ins), dense(out), ["backend"]), "",
          "### MoE aggregated and disaggregated (xPyD) rows", "",
          f"Targets (issue 12, LOSO): MoE aggregated TTFT median <= 25%, TPOT <= 10%; xPyD TTFT <= 25%, TPOT <= 10%; "
          f">= 95% of rows predicted. Predicted (status ok): {ok_share:.1%} of {len(ins)} rows.", "",
          "MoE aggregated:", "", group_table(moe(ins), moe(out), []), "",
          group_table(moe(ins), moe(out), ["system", "backend"]), "",
          "Disaggregated (xPyD):", "", group_table(xpyd(ins), xpyd(out), []), "",
          group_table(xpyd(ins), xpyd(out), ["system", "backend"]), "",
          "### Every predicted row, per system, engine, model and mode", "", group_table(ins, out, KEYS), "",
          "### Row statuses", "", "| status | rows |", "|---|---|"]
    md += [f"| {s} | {n} |" for s, n in status.value_counts().items()]
    md += ["", *[f"![{f}](figures/{f})" for f in figs]]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
