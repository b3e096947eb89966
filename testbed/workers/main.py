"""A worker process: `python -m testbed.workers.main --connect HOST:PORT --role prefill --index 0`.

Connects to the global scheduler (authkey in $TESTBED_AUTHKEY), says hello, receives its
configuration, builds the model (seeded weights: identical in every process), joins the
torch.distributed group when the KV backend needs one, warms up and reports ready; then
loops: handle messages, run one prefill chunk or decode iteration, flush events, send a
heartbeat when it has been quiet. It exits when told to stop, when the scheduler's
connection closes (no orphans if the launcher dies) and on SIGTERM; Ctrl-C in the
terminal is left to the launcher, which stops everyone in order.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback

HEARTBEAT_S = 0.5
SIGTERM_GRACE_S = 3.0     # after SIGTERM: clean up in order, or be gone this much later anyway
_own_shm_prefix: str | None = None   # this worker's arena files (kv/shm.py), removed on any way out


def _build(cfg: dict, chan):
    import torch

    from ..engine import Engine
    from ..kv import NEEDS_GROUP, make_connector
    from ..model import build_model, scaled_config
    from .classifier import LengthClassifier
    from .decode import DecodeWorker
    from .prefill import PrefillWorker

    cpus = set(cfg.get("cpus") or ()) & set(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())
    if cpus:
        os.sched_setaffinity(0, cpus)      # --pin-cpus: this worker on its own core(s)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    device = cfg.get("device", "cpu")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device).index or 0)
    m = cfg["model"]
    config = scaled_config(m["name"], m.get("layers"), m.get("hidden"), max_context=m.get("max_context"))
    model = build_model(config, seed=int(m.get("seed", 0)), dtype=m.get("dtype", "fp32"), device=device,
                        weights_dir=m.get("weights_dir"))
    engine = Engine(model)
    name = cfg["name"]
    backend = cfg["kv_backend"]
    if backend in NEEDS_GROUP:
        from ..kv.dist import init_group
        store = None
        if cfg.get("dist_init") is None:
            import torch.distributed as dist
            from datetime import timedelta
            store = dist.TCPStore(cfg["store_host"], int(cfg["store_port"]), is_master=False,
                                  timeout=timedelta(seconds=float(cfg.get("startup_timeout_s", 300))))
        init_group(backend, int(cfg["rank"]), int(cfg["world_size"]), store=store,
                   init_method=cfg.get("dist_init"), timeout_s=float(cfg.get("startup_timeout_s", 300)))

    def post(dst, msg):
        chan.send({"op": "peer", "dst": dst, "msg": msg})

    connector = make_connector(backend, name, post, ranks=cfg.get("ranks"), prefix=cfg.get("shm_prefix", "tb"),
                               arena_bytes=cfg.get("arena_bytes"))
    outbox: list = []
    emit = outbox.append
    if cfg["role"] == "prefill":
        p = cfg["prefill"]
        classifier = None
        if p.get("classifier_layers", 1) > 0:
            classifier = LengthClassifier(layers=p.get("classifier_layers", 1), hidden=p.get("classifier_hidden", 128),
                                          seed=int(m.get("seed", 0)), device=device, dtype=m.get("dtype", "fp32"))
        worker = PrefillWorker(name, engine, connector, emit, chunk_tokens=int(p["chunk_tokens"]),
                               batch_limit=int(p.get("batch_limit", 16)), order=p.get("order", "fcfs"),
                               classifier=classifier, seed=int(cfg.get("prompt_seed", 0)))
    else:
        d = cfg["decode"]
        worker = DecodeWorker(name, engine, connector, emit, policy=d.get("admission", "reserve_dynamic"),
                              capacity_tokens=int(d["capacity_tokens"]), block_tokens=int(d.get("block_tokens", 16)),
                              batch_limit=int(d.get("batch_limit", 256)),
                              return_tokens=bool(d.get("return_tokens", False)),
                              stream_tokens=bool(d.get("stream_tokens", False)), seed=int(cfg.get("prompt_seed", 0)))
    _warm_up(engine, worker)
    if cfg["role"] == "prefill":
        connector.prepare([n for n in cfg.get("ranks", {}) if n.startswith("d")])
    return worker, connector, outbox


def _warm_up(engine, worker) -> None:
    """One prefill and one decode pass (lazy initialisation out of the measured run)."""
    import torch
    kv = engine.new_kv(9)
    engine.prefill([(kv, torch.arange(4, 12))])
    engine.decode([(kv, 5)])
    if getattr(worker, "classifier", None) is not None:
        worker.classifier.run([torch.arange(4, 12)])


def serve(chan, role: str, index: int) -> int:
    chan.send({"op": "hello", "role": role, "index": index, "pid": os.getpid(), "host": socket.gethostname()})
    cfg = None
    while cfg is None:
        msg = chan.recv()
        if msg["op"] == "ping":
            chan.send({"op": "pong", "sent": msg["sent"], "t": time.monotonic()})
        elif msg["op"] == "config":
            cfg = msg["config"]
        elif msg["op"] == "stop":
            return 0
    global _own_shm_prefix
    _own_shm_prefix = f"{cfg.get('shm_prefix', 'tb')}-{cfg['name']}-"
    worker, connector, outbox = _build(cfg, chan)
    chan.send({"op": "ready", "t": time.monotonic()})
    handlers = {"request": getattr(worker, "on_request", None), "send_kv": getattr(worker, "on_send_kv", None),
                "expect": getattr(worker, "on_expect", None), "give_back": getattr(worker, "on_give_back", None)}
    try:
        while True:
            while chan.poll(0):
                msg = chan.recv()
                op = msg["op"]
                if op == "stop":
                    chan.send({"op": "bye", "transfers": _transfer_summary(connector),
                               "iterations": worker.iterations,
                               "preemptions": getattr(worker, "preemptions", 0)})
                    return 0
                if op == "peer":
                    connector.on_message(msg["msg"])
                elif op == "ping":
                    chan.send({"op": "pong", "sent": msg["sent"], "t": time.monotonic()})
                elif handlers.get(op) is not None:
                    handlers[op](msg)
                else:
                    raise RuntimeError(f"{cfg['name']}: unknown message {op!r}")
            did = worker.step()
            for m in outbox:
                chan.send(m)
            outbox.clear()
            if time.monotonic() - chan.last_sent > HEARTBEAT_S:
                chan.send({"op": "hb", "t": time.monotonic()})
            if not did:
                chan.poll(0.0005 if connector.pending() else 0.05)
    finally:
        connector.close()


def _transfer_summary(connector) -> dict:
    sent = [t for t in connector.history if t.side == "send" and t.state == "done"]
    recv = [t for t in connector.history if t.side == "recv" and t.state == "done"]
    return {"backend": connector.name,
            "sent": len(sent), "sent_bytes": sum(t.nbytes for t in sent), "sent_s": sum(t.seconds for t in sent),
            "received": len(recv), "received_bytes": sum(t.nbytes for t in recv),
            "received_s": sum(t.seconds for t in recv)}


def _set_parent_death_signal() -> None:
    """Linux: die with the launcher even if it is killed with SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG: SIGTERM, so that it frees its shared memory
    except (OSError, AttributeError):
        pass


def _on_sigterm(*_):
    """Leave in order (the `finally`s free the KV connector's shared memory); a worker stuck
    in a C call (a collective that never returns) is ended by the timer, which removes this
    worker's arena files itself."""
    def last_resort():
        if _own_shm_prefix:
            from ..kv.shm import remove_leftovers
            remove_leftovers(_own_shm_prefix)
        os._exit(143)
    timer = threading.Timer(SIGTERM_GRACE_S, last_resort)
    timer.daemon = True
    timer.start()
    sys.exit(143)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="testbed worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--connect", required=True, help="the scheduler's HOST:PORT")
    ap.add_argument("--role", required=True, choices=("prefill", "decode"))
    ap.add_argument("--index", required=True, type=int)
    ap.add_argument("--die-with-parent", action="store_true", help="(set by the local launcher)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.die_with_parent:
        _set_parent_death_signal()
    from multiprocessing import AuthenticationError

    from .proto import connect
    try:
        chan = connect(args.connect)
    except (OSError, ValueError, AuthenticationError, EOFError) as e:
        print(f"error: cannot join the scheduler at {args.connect}: {e or type(e).__name__} "
              "(is the launcher running, and are the address and $TESTBED_AUTHKEY the ones it printed?)",
              file=sys.stderr, flush=True)
        return 2
    try:
        return serve(chan, args.role, args.index)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 3       # the scheduler went away: nothing left to do
    except Exception:  # noqa: BLE001 - report any failure to the scheduler, then exit non-zero
        text = traceback.format_exc()
        try:
            chan.send({"op": "error", "text": text})
        except OSError:
            pass
        print(text, file=sys.stderr, flush=True)
        return 1
    finally:
        chan.close()


if __name__ == "__main__":
    sys.exit(main())
