"""The engine on a CUDA device: fp32 against transformers, fp16/bf16 against an fp32
reference (no worse than transformers' own fp16/bf16 run), seeded CUDA weights, profiler.
Skipped on machines without CUDA."""
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

from testbed.engine import Engine  # noqa: E402
from testbed.model import build_model, scaled_config  # noqa: E402
from testbed.profile import ProfileGrid, profile  # noqa: E402


def cfg():
    # real widths and the full vocabulary, few layers: seconds on any GPU
    return scaled_config("opt-1.3b", layers=4, hidden=1024)


def ids(n, seed, vocab):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def hf_last(model, seq):
    with torch.no_grad():
        return model(torch.as_tensor(seq, device="cuda")[None]).logits[0, -1].float()


def engine_run(eng, prompts, steps):
    """Chunked, merged prefill (chunks of 96 tokens over the requests, FCFS) then batched
    decode with the reference's tokens; returns per step a list of logits per request."""
    kvs = [eng.new_kv(p.numel() + steps + 1) for p in prompts]
    pos = [0] * len(prompts)
    last = [None] * len(prompts)
    while any(q < p.numel() for q, p in zip(pos, prompts)):
        budget, sl, who = 96, [], []
        for i, p in enumerate(prompts):
            if budget and pos[i] < p.numel():
                n = min(budget, p.numel() - pos[i])
                sl.append((kvs[i], p[pos[i]:pos[i] + n]))
                who.append(i)
                pos[i] += n
                budget -= n
        out = eng.prefill(sl)
        for j, i in enumerate(who):
            last[i] = out[j]
    return kvs, last


def rel_err(a, ref):
    return ((a - ref).abs().max() / ref.abs().max()).item()


def test_cuda_weights_are_deterministic():
    a = build_model(cfg(), seed=7, dtype="fp16", device="cuda")
    b = build_model(cfg(), seed=7, dtype="fp16", device="cuda")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_fp32_cuda_engine_matches_transformers():
    torch.backends.cuda.matmul.allow_tf32 = False
    m = build_model(cfg(), seed=0, dtype="fp32", device="cuda")
    eng = Engine(m)
    prompts = [ids(n, n, m.config.vocab_size) for n in (150, 37, 260)]
    kvs, last = engine_run(eng, prompts, 4)
    seqs = [p.tolist() for p in prompts]
    for i, s in enumerate(seqs):
        assert torch.allclose(last[i], hf_last(m, s), atol=2e-3, rtol=1e-3)
        s.append(int(last[i].argmax()))
    for _ in range(4):
        out = eng.decode([(kv, s[-1]) for kv, s in zip(kvs, seqs)])
        for i, s in enumerate(seqs):
            assert torch.allclose(out[i], hf_last(m, s), atol=2e-3, rtol=1e-3)
            s.append(int(out[i].argmax()))
    p = prompts[1]
    want = m.generate(p[None].cuda(), max_new_tokens=16, do_sample=False, eos_token_id=None,
                      pad_token_id=1)[0, p.numel():].tolist()
    assert eng.generate_greedy(p, 16, chunk_tokens=10) == want


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_engine_is_as_close_to_fp32_as_transformers(dtype):
    ref = build_model(cfg(), seed=0, dtype="fp32", device="cuda")
    low = build_model(cfg(), seed=0, dtype=dtype, device="cuda")
    eng = Engine(low)
    prompts = [ids(n, 100 + n, ref.config.vocab_size) for n in (120, 45, 300)]
    kvs, last = engine_run(eng, prompts, 3)
    seqs = [p.tolist() for p in prompts]
    worst_engine = worst_hf = 0.0
    for step in range(4):
        if step:
            last = eng.decode([(kv, s[-1]) for kv, s in zip(kvs, seqs)])
        for i, s in enumerate(seqs):
            r = hf_last(ref, s)
            worst_engine = max(worst_engine, rel_err(last[i], r))
            worst_hf = max(worst_hf, rel_err(hf_last(low, s), r))
            s.append(int(r.argmax()))
    limit = {"fp16": 5e-3, "bf16": 4e-2}[dtype]
    assert worst_engine <= max(2 * worst_hf, limit), (worst_engine, worst_hf)


def test_profile_runs_on_cuda():
    eng = Engine(build_model(cfg(), seed=0, dtype="fp16", device="cuda"))
    grid = ProfileGrid(prefill_tokens=(64, 256), prefill_context_tokens=(0, 128), prefill_slices=(1, 4),
                       decode_batch=(1, 8), decode_context_tokens=(64,), kv_tokens=(64,), repeats=3, warmup=1)
    rows = profile(eng, grid, model_name="m", progress=False)
    kinds = [r.kind for r in rows]
    assert kinds.count("prefill") == 6 and kinds.count("decode") == 2 and kinds.count("kv") == 3
    assert {r.path for r in rows if r.kind == "kv"} == {"copy", "d2h", "h2d"}
    assert all(0 < r.seconds < 1 for r in rows)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_decode_workspace_matches_gather_path_on_cuda(dtype):
    """The workspace decode (fused attention over the resident batch, masked when ragged)
    against the previous per-layer gather on the same caches, while requests join and
    leave and contexts grow past the workspace's first capacity."""
    torch.backends.cuda.matmul.allow_tf32 = False
    m = build_model(cfg(), seed=0, dtype=dtype, device="cuda")
    ws, ref = Engine(m), Engine(m, decode_path="gather")
    vocab = m.config.vocab_size
    lens = (30, 77, 5, 200, 64)
    caches, last = [], []
    for i, n in enumerate(lens):
        a, b = ws.new_kv(n + 80), ref.new_kv(n + 80)
        p = ids(n, 500 + i, vocab)
        last.append(int(ws.prefill([(a, p)])[0].argmax()))
        ref.prefill([(b, p)])
        caches.append((a, b))
    worst = 0.0
    for step in range(70):
        batch = [i for i in range(len(lens)) if (step + i) % 7 != 0]      # members change every step
        got = ws.decode([(caches[i][0], last[i]) for i in batch])
        want = ref.decode([(caches[i][1], last[i]) for i in batch])
        worst = max(worst, rel_err(got, want))
        for j, i in enumerate(batch):
            last[i] = int(want[j].argmax())
    assert worst <= {"fp32": 1e-4, "fp16": 1e-2}[dtype], worst
    for a, b in caches:
        assert a.length == b.length and torch.allclose(a.view().float(), b.view().float(), atol=1e-2)
