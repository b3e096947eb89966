"""The engine's streaming front end: the process that turns each step's output into the
clients' streamed chunks (SGLang's TokenizerManager in the HTTP server process, vLLM's
API-server OutputProcessor), one per engine instance (its attention-DP ranks share it).

It is single-threaded Python work per chunk sent, so it streams at most `tokens_per_s`
(chunks per second x tokens per chunk, the engine's stream interval). Past that, chunks
queue in front of it in the order the engine made them and every client sees its tokens
late by the queue's wait - the first token included - while the engine runs on: a
closed-loop client sends its next request only when it has the last token, so fewer
requests are in the engine than clients hold slots, and the measured TTFT grows with the
output length (sgl-project/sglang issue 6553: TokenizerManager single-core bottleneck under
high concurrency; ROCm/ATOM pull request 2161: the model finishes a wave while the API
process still drains its output).

A fluid FIFO queue: tokens made in a run of decode steps arrive evenly over the run, the
front end works them off at `tokens_per_s`; `wait` is the backlog in seconds."""
from __future__ import annotations


class FrontEnd:
    def __init__(self, tokens_per_s: float):
        if not tokens_per_s > 0:
            raise ValueError(f"a front end streams a positive number of tokens per second, got {tokens_per_s}")
        self.s_per_token = 1.0 / float(tokens_per_s)
        self.t = 0.0            # time of the last update
        self.wait = 0.0         # backlog at self.t, in seconds of front-end work

    def _drain_to(self, t: float) -> None:
        if t > self.t:
            self.wait = max(self.wait - (t - self.t), 0.0)
            self.t = t

    def made(self, t0: float, t1: float, tokens: int) -> None:
        """`tokens` made evenly over [t0, t1]: with arrivals at a steady rate the backlog
        grows while they outpace the front end and drains to zero otherwise, so it ends at
        max(backlog + work - span, 0), the span counted from the last update where the run
        began before it (attention-DP ranks report their runs in turn)."""
        self._drain_to(t0)
        span = max(t1 - self.t, 0.0)
        self.wait = max(self.wait + tokens * self.s_per_token - span, 0.0)
        self.t = max(t1, self.t)

    def seen(self, t: float) -> float:
        """When a client sees a token the engine made at `t` (not before the last update)."""
        self._drain_to(t)
        return t + self.wait + self.s_per_token
