"""The testbed engine against transformers' own OPTForCausalLM on the same weights (CPU, fp32,
tiny configs: seconds)."""
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from planner.catalog import model as catalog_model  # noqa: E402
from planner.errors import InputError  # noqa: E402
from testbed.engine import Engine  # noqa: E402
from testbed.kv_cache import RequestKV  # noqa: E402
from testbed.model import build_model, scaled_config, write_config  # noqa: E402

ATOL, RTOL = 1e-4, 1e-4
VOCAB = 512


def tiny_config(**kw):
    return scaled_config("opt-125m", layers=2, hidden=64, heads=4, vocab=VOCAB, max_context=128, **kw)


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_config(), seed=0)


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model)


def prompt(n, seed):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def hf_last_logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(ids)[None]).logits[0, -1]


def hf_all_logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(ids)[None]).logits[0]


def test_scaled_config_names_and_shapes():
    c = scaled_config("opt-1.3b", layers=4, hidden=512)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.ffn_dim) == (4, 512, 8, 2048)
    assert c._name_or_path == "opt-1.3b-l4-h512"
    assert scaled_config("opt-6.7b")._name_or_path == "opt-6.7b"
    with pytest.raises(InputError, match="multiple"):
        scaled_config("opt-1.3b", hidden=100)
    with pytest.raises(InputError, match="OPT"):
        scaled_config("llama-2-7b")
    with pytest.raises(InputError, match="unknown model"):
        scaled_config("opt-7b")


def test_written_config_reads_back_in_planner(tmp_path):
    c = scaled_config("opt-6.7b", layers=8, hidden=1024)
    spec = catalog_model(str(write_config(c, tmp_path)))
    full = catalog_model("opt-6.7b")
    assert spec.name == "opt-6.7b-l8-h1024"
    assert (spec.layers, spec.hidden, spec.heads, spec.head_dim, spec.ffn) == (8, 1024, 8, 128, 4096)
    assert spec.kv_bytes_per_token("fp16") == full.kv_bytes_per_token("fp16") * 8 / 32 / 4
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "opt"


def test_seeded_weights_identical_across_builds_and_differ_by_seed(model):
    again = build_model(tiny_config(), seed=0)
    other = build_model(tiny_config(), seed=1)
    pairs = list(zip(model.state_dict().items(), again.state_dict().items()))
    assert all(n1 == n2 and torch.equal(a, b) for (n1, a), (n2, b) in pairs)
    assert not torch.equal(model.model.decoder.layers[0].fc1.weight, other.model.decoder.layers[0].fc1.weight)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight


def test_weights_from_folder_match(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = build_model("ignored", weights_dir=tmp_path)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(InputError, match="config.json"):
        build_model("opt-125m", weights_dir=tmp_path / "nope")


def test_unchunked_prefill_matches_hf(model, engine):
    p = prompt(23, 1)
    kv = engine.new_kv(40)
    logits = engine.prefill([(kv, p)])
    assert logits.shape == (1, VOCAB)
    assert torch.allclose(logits[0], hf_last_logits(model, p), atol=ATOL, rtol=RTOL)
    assert kv.length == 23


def test_chunked_prefill_merges_requests_and_matches_hf(model, engine):
    pa, pb, pc = prompt(21, 2), prompt(13, 3), prompt(6, 4)
    ra, rb, rc = (hf_all_logits(model, p) for p in (pa, pb, pc))
    a, b, c = engine.new_kv(32), engine.new_kv(32), engine.new_kv(32)
    # chunks of 8 tokens, requests sliced and merged as TetriInfer does
    l1 = engine.prefill([(a, pa[:8])])
    l2 = engine.prefill([(a, pa[8:13]), (b, pb[:3])])
    l3 = engine.prefill([(b, pb[3:11])])
    l4 = engine.prefill([(a, pa[13:21])])
    l5 = engine.prefill([(b, pb[11:]), (c, pc)])
    got = [(l1[0], ra[7]), (l2[0], ra[12]), (l2[1], rb[2]), (l3[0], rb[10]), (l4[0], ra[20]),
           (l5[0], rb[12]), (l5[1], rc[5])]
    for g, r in got:
        assert torch.allclose(g, r, atol=ATOL, rtol=RTOL)
    assert (a.length, b.length, c.length) == (21, 13, 6)
    # the cache holds exactly what an unchunked prefill writes
    whole = engine.new_kv(32)
    engine.prefill([(whole, pa)])
    assert torch.allclose(a.view(), whole.view(), atol=1e-5)


@pytest.mark.parametrize("split_call_tokens", [80, 0, 10**9])   # as shipped, row by row, padded
def test_batched_decode_different_contexts_matches_hf(model, engine, monkeypatch, split_call_tokens):
    import testbed.engine as eng_mod
    monkeypatch.setattr(eng_mod, "SPLIT_CALL_TOKENS", split_call_tokens)
    assert eng_mod._split_attention(engine.device, [3, 17, 9]) == (split_call_tokens == 0)
    prompts = [prompt(n, 10 + n) for n in (3, 17, 9)]
    kvs = [engine.new_kv(40) for _ in prompts]
    first = engine.prefill([(kv, p) for kv, p in zip(kvs, prompts)])
    seqs = [p.tolist() + [int(lg.argmax())] for p, lg in zip(prompts, first)]
    for step in range(5):
        logits = engine.decode([(kv, s[-1]) for kv, s in zip(kvs, seqs)])
        for i, s in enumerate(seqs):
            assert torch.allclose(logits[i], hf_last_logits(model, s), atol=ATOL, rtol=RTOL), (step, i)
            s.append(int(logits[i].argmax()))
    assert [kv.length for kv in kvs] == [3 + 5, 17 + 5, 9 + 5]


def test_decode_batch_composition_does_not_change_results(engine):
    p1, p2 = prompt(5, 20), prompt(30, 21)
    a, b, solo = engine.new_kv(40), engine.new_kv(40), engine.new_kv(40)
    engine.prefill([(a, p1), (b, p2)])
    engine.prefill([(solo, p1)])
    together = engine.decode([(a, 7), (b, 9)])
    alone = engine.decode([(solo, 7)])
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_greedy_tokens_equal_hf_generate(model, engine):
    p = prompt(19, 5)
    n = 12
    out = model.generate(p[None], max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=1)
    want = out[0, p.numel():].tolist()
    assert len(want) == n and len(set(want)) >= 2   # a random model that does not just echo
    assert engine.generate_greedy(p, n) == want
    assert engine.generate_greedy(p, n, chunk_tokens=5) == want


def test_post_norm_and_projection_variant_matches_hf():
    # opt-350m's shape: layer norm after the blocks, 512-wide embeddings projected in/out
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, ffn_dim=96,
                                 num_attention_heads=3, max_position_embeddings=64,
                                 word_embed_proj_dim=32, do_layer_norm_before=False)
    m = build_model(cfg, seed=3)
    e = Engine(m)
    p = prompt(11, 6)
    kv = e.new_kv(20)
    e.prefill([(kv, p[:4])])
    lg = e.prefill([(kv, p[4:])])
    assert torch.allclose(lg[0], hf_last_logits(m, p), atol=ATOL, rtol=RTOL)
    lg = e.decode([(kv, 42)])
    assert torch.allclose(lg[0], hf_last_logits(m, p.tolist() + [42]), atol=ATOL, rtol=RTOL)


def test_kv_view_is_contiguous_and_round_trips(engine):
    kv = engine.new_kv(30)
    engine.prefill([(kv, prompt(12, 7))])
    v = kv.view()
    assert v.is_contiguous() and v.shape == (12, 2, 2, 4, 16)
    assert kv.filled_bytes == v.numel() * 4 == 12 * engine.kv_bytes_per_token
    other = RequestKV.from_view(v.clone(), capacity_tokens=20)
    assert other.length == 12 and other.capacity_tokens == 20 and torch.equal(other.view(), v)
    # the received cache continues decoding exactly like the original
    assert torch.equal(engine.decode([(other, 3)]), engine.decode([(kv, 3)]))


def test_engine_rejects_overflow_and_duplicates(engine):
    kv = engine.new_kv(8)
    with pytest.raises(ValueError, match="overflow"):
        engine.prefill([(kv, prompt(9, 8))])
    with pytest.raises(ValueError, match="twice"):
        engine.prefill([(kv, prompt(2, 8)), (kv, prompt(2, 9))])
    with pytest.raises(ValueError, match="prefilled"):
        engine.decode([(kv, 1)])
    with pytest.raises(ValueError, match="positions"):
        engine.new_kv(129)


def _mirrors(eng, kvs):
    """The decode workspace holds exactly `kvs`, each slot equal to its cache's filled tokens."""
    ws = eng._workspace
    assert sorted(map(id, ws.kvs)) == sorted(map(id, kvs))
    for slot, kv in enumerate(ws.kvs):
        assert ws.lengths[slot] == kv.length
        assert torch.equal(ws.data[:, :, slot, :kv.length], kv.data[:kv.length].permute(1, 2, 0, 3, 4))


def test_decode_workspace_tracks_joins_leaves_and_outside_changes(model):
    """Continuous batching on the workspace: requests join, leave, are rebuilt by a prefill
    (preemption + recompute) and grow past the workspace's first token capacity (64); every
    step's logits equal the per-layer gather path's and transformers' on the same tokens."""
    ws_eng, ref_eng = Engine(model), Engine(model, decode_path="gather")
    lens = {"a": 5, "b": 30, "c": 12, "d": 50}
    caches = {}
    seqs = {}
    for r, n in lens.items():
        p = prompt(n, 40 + n)
        caches[r] = (ws_eng.new_kv(120), ref_eng.new_kv(120))
        first = ws_eng.prefill([(caches[r][0], p)])
        ref_eng.prefill([(caches[r][1], p)])
        seqs[r] = p.tolist() + [int(first[0].argmax())]
    plan = [("a", "b"), ("a", "b", "c"), ("b", "c"), ("c", "b", "a"), ("d", "a"), ("d", "a", "b", "c")] + \
           [("d", "b")] * 20
    ws = ws_eng._workspace
    loads = 0
    for step, batch in enumerate(plan):
        if step == 4:    # "b" is preempted and recomputed: a new cache, prefilled from scratch
            p = torch.tensor(seqs["b"][:-1])
            caches["b"] = (ws_eng.new_kv(120), caches["b"][1])
            ws_eng.prefill([(caches["b"][0], p)])
        if step == 5:    # "c" continues by a prefill outside decode (same cache, longer)
            extra = [3, 4]
            for e in (ws_eng, ref_eng):
                kv = caches["c"][0 if e is ws_eng else 1]
                e.prefill([(kv, torch.tensor([seqs["c"][-1]] + extra[:-1]))])
            seqs["c"] += extra[:-1]
            seqs["c"].append(extra[-1])
        got = ws_eng.decode([(caches[r][0], seqs[r][-1]) for r in batch])
        want = ref_eng.decode([(caches[r][1], seqs[r][-1]) for r in batch])
        assert torch.allclose(got, want, atol=1e-5), step
        if step in (0, 4, 5, len(plan) - 1):
            for i, r in enumerate(batch):
                assert torch.allclose(got[i], hf_last_logits(model, seqs[r]), atol=ATOL, rtol=RTOL), (step, r)
        for i, r in enumerate(batch):
            seqs[r].append(int(got[i].argmax()))
        _mirrors(ws_eng, [caches[r][0] for r in batch])
        loads = ws.loads
    # joins copied in: a, b (step 0), c (1), d (4), b again (4: rebuilt), c again (5: changed), a (5)
    assert loads == 7
    # first capacity: 31 tokens rounded to 64; "d" passing 64 grows it to max(65, 64 * 1.25)
    # rounded up to a multiple of 64 = 128 (the model's positions)
    assert caches["d"][0].length == 50 + 22 and ws.capacity_tokens == 128 and ws.slots == 4
    ws_eng.reset_decode_workspace()
    assert ws.nbytes == 0 and ws.kvs == []


def test_decode_path_must_be_known(model):
    with pytest.raises(ValueError, match="decode_path"):
        Engine(model, decode_path="paged")


def test_decode_workspace_recopies_a_cache_whose_contents_were_received(model):
    """Same object, same length, new contents (`receive`): the workspace copies it again."""
    eng, ref = Engine(model), Engine(model, decode_path="gather")
    a, b, c = eng.new_kv(40), eng.new_kv(40), ref.new_kv(40)
    eng.prefill([(a, prompt(10, 1))])
    eng.decode([(a, 3)])                      # a resident in the workspace, 11 tokens
    eng.prefill([(b, prompt(11, 2))])
    a.receive(b.view().clone())               # 11 tokens again, b's contents
    ref.prefill([(c, prompt(11, 2))])
    got = eng.decode([(a, 7)])
    assert eng._workspace.loads == 2           # copied in again, not decoded on stale K/V
    assert torch.allclose(got, ref.decode([(c, 7)]), atol=1e-5)
    _mirrors(eng, [a])


def test_cpu_splits_attention_only_when_padding_costs_more_than_the_calls():
    from testbed.engine import SPLIT_CALL_TOKENS, _split_attention
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    long_and_short = [600] + [143] * 7          # padded: 8 x 601 positions; split: 1608 + 8 calls
    assert 8 * 601 > sum(long_and_short) + 8 * (1 + SPLIT_CALL_TOKENS)
    assert _split_attention(cpu, long_and_short)
    assert not _split_attention(cpu, [200] * 8)          # equal contexts: nothing padded
    assert not _split_attention(cpu, [600])
    assert not _split_attention(cuda, long_and_short)    # one launch per row costs more on a GPU
