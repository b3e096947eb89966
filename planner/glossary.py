"""The terms the planner's output uses, in plain words. `planner explain TERM` prints one;
docs/glossary.md is this list as a page (`python -m planner.glossary > docs/glossary.md`;
tests/test_cli_manners.py checks the two agree)."""
from __future__ import annotations

import difflib

TERMS: dict[str, tuple[tuple[str, ...], str]] = {
    "TTFT": (("time to first token",),
             "Time to first token: from a request's arrival until its first output token. Waiting in the prefill "
             "queue plus the prefill itself (plus the KV transfer when disaggregated)."),
    "TPOT": (("time per output token", "itl", "inter-token latency"),
             "Time per output token after the first: (finish - first token) / (output tokens - 1). What a reader "
             "of a streamed answer feels; ITL (inter-token latency) is the same gap measured token by token."),
    "JCT": (("job completion time", "e2e latency"),
            "Job completion time: arrival to last token. TTFT + (output tokens - 1) x TPOT."),
    "SLO": (("service level objective", "percentile", "p90", "p99"),
            "The latency target a plan must meet, e.g. p90 TTFT <= 1 s and p90 TPOT <= 100 ms: 90% of requests "
            "at least that fast. Write durations as 500ms, 0.5s or 0.5 (seconds)."),
    "prefill": (("prefill instance",),
                "Processing the prompt: one pass over all prompt tokens, compute-bound, produces the KV cache and "
                "the first token."),
    "decode": (("decode instance",),
               "Generating the answer one token per step for every running request, memory-bandwidth-bound."),
    "disaggregated": (("disaggregation", "pd", "xpyd"),
                      "Prefill and decode on separate instances (x prefill, y decode: xPyD); the KV cache moves "
                      "from one to the other. Decodes are never interrupted by prompts (TetriInfer, DistServe)."),
    "coupled": (("vllm-style", "aggregated"),
                "One pool of instances doing both prefill and decode in the same steps (vLLM's default)."),
    "chunked coupled": (("sarathi-style", "sarathi", "chunked prefill"),
                        "Coupled serving where each step mixes running decodes with slices of prompts up to a token "
                        "budget, so long prompts do not stall decodes (Sarathi-Serve)."),
    "chunk": (("chunk size", "token budget", "max_num_batched_tokens", "chunked_prefill_size"),
              "Tokens one engine step processes at most (vLLM --max-num-batched-tokens, SGLang "
              "--chunked-prefill-size). For a prefill instance: the prompt slice per step."),
    "TP": (("tensor parallelism", "tensor parallel"),
           "Tensor parallelism: one instance spread over TP GPUs, each holding 1/TP of every layer; faster steps "
           "and more KV room for TP times the GPUs."),
    "instance": (("replica",),
                 "One copy of the model serving requests on TP GPUs; a plan has N instances per role."),
    "KV cache": (("kv", "kv memory"),
                 "The attention keys and values of every token a request has seen, kept on the GPU while it decodes; "
                 "its size per token is fixed by the model, so memory bounds how many requests decode at once."),
    "KV transfer": (("kv link", "nixl", "kv connector"),
                    "Moving a request's KV cache from its prefill instance to its decode instance (vLLM's "
                    "NixlConnector, SGLang's mooncake or nixl backends); bytes over link bandwidth."),
    "LPLD": (("lphd", "hpld", "hphd", "workload class", "light prefill", "heavy decode"),
             "TetriInfer's workload classes: Light/Heavy Prefill (<= / > 512 prompt tokens) x Light/Heavy Decode "
             "(<= / > 128 output tokens)."),
    "burstiness": (("cv", "inter-arrival cv"),
                   "Coefficient of variation of the gaps between arrivals: 1 for Poisson traffic, above 1 for bursts "
                   "that queue up and raise TTFT at the same mean rate."),
    "perf per dollar": (("tokens/s per $/h", "tokens per dollar"),
                        "Tokens served per second for each dollar per hour the GPUs cost; higher is better."),
    "$/M total tokens": (("usd per million tokens", "$/million tokens", "cost per token"),
                         "Dollars per million tokens processed, prompt and output together."),
    "$/M output tokens": (("usd per million output tokens",),
                          "Dollars per million generated tokens only - the figure API price lists quote for output."),
    "on-demand": (("spot", "reserved", "price kind"),
                  "Price kinds: on-demand (hourly, no commitment), spot (cheaper, can be taken back), reserved "
                  "(1-3 year commitment). The default price is the cheapest listed on-demand offer, named."),
    "windows": (("plan over time", "autoscale", "fixed fleet", "reserved burst"),
                "Planning per time window (--windows S): instances per window sized for that window's load, with "
                "strategies static peak, fixed fleet (roles flip), autoscale, reserved base + burst."),
    "flip": (("role flip",),
             "An idle instance switching between prefill and decode roles (TetriInfer), instead of adding GPUs."),
    "saturation chunk": (("saturation",),
                         "The smallest chunk at which a GPU's prefill throughput stops growing; TetriInfer chunks "
                         "prompts at it (512 tokens for OPT-13B on a V100)."),
}


def lookup(term: str) -> tuple[str, str] | None:
    """(term, definition) for a term or one of its aliases, case-insensitive."""
    want = term.strip().lower()
    for name, (aliases, text) in TERMS.items():
        if want == name.lower() or want in aliases:
            return name, text
    return None


def suggestions(term: str) -> list[str]:
    names = [n for n in TERMS] + [a for al, _ in TERMS.values() for a in al]
    return difflib.get_close_matches(term.strip().lower(), [n.lower() for n in names], n=3, cutoff=0.5)


def markdown() -> str:
    lines = ["# Glossary", "", "The terms in the planner's output. `planner explain TERM` prints one.", ""]
    for name, (aliases, text) in TERMS.items():
        also = f" (also: {', '.join(aliases)})" if aliases else ""
        lines += [f"**{name}**{also}: {text}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
