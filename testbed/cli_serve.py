"""`testbed serve`: the plan's prefill and decode processes behind an OpenAI-compatible
HTTP server (testbed/serve_api.py), so that any benchmark client can drive the testbed.

Bad input exits 2 with one line. Ctrl-C (or SIGTERM) drains: no new requests (503), the
requests in flight finish (at most --drain-timeout seconds), then every process stops;
exit 0. Processes that fail stop the server with exit 1.
"""
from __future__ import annotations

import asyncio
import socket
import sys

import click

from planner.cli.params import Int, Seconds
from planner.errors import InputError

from .cli_run import EXIT_RUN_FAILED, guarded, replan_command, run_cmd

# options shared with `testbed run` (the same definitions, so the two stay alike)
SHARED = ("model", "layers", "hidden", "max_context", "weights_dir", "dtype", "device", "kv_backend", "n_prefill",
          "n_decode", "decode_kv_tokens", "classifier_layers", "classifier_hidden", "threads", "pin_cpus", "seed",
          "heartbeat_timeout", "log_dir")


@click.command("serve")
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
              help="Plan JSON (`planner recommend --for-testbed -o plan.json`): role counts, chunk size, policies.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything wider than loopback should come with --api-key.")
@click.option("--port", type=Int(lo=0, hi=65535), default=8000, show_default=True, help="Port (0: any free port, printed).")
@click.option("--api-key", envvar="TESTBED_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 routes [env TESTBED_API_KEY].")
@click.option("--served-model-name", default=None, help="Model name clients use [default: the model's name].")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), default=None,
              help="Local tokenizer (folder with tokenizer.json or vocab.json + merges.txt, or a tokenizer.json); "
                   "default: a byte-level fallback (1 token per UTF-8 byte).")
@click.option("--max-inflight", type=Int(lo=1, hi=1_000_000), default=256, show_default=True,
              help="Requests in flight beyond which new ones get HTTP 429.")
@click.option("--drain-timeout", type=Seconds(hi=86400), default=60.0, show_default=True,
              help="Seconds Ctrl-C waits for requests in flight before stopping anyway.")
@click.option("--access-log", is_flag=True, help="Log every HTTP request (uvicorn's access log).")
@guarded
def serve_cmd(plan_path, host, port, api_key, served_model_name, tokenizer_path, max_inflight, drain_timeout,
              access_log, **kw):
    """Serve a plan's testbed over an OpenAI-compatible HTTP API (/v1/completions,
    /v1/chat/completions with streaming, /v1/models, /health).

    \b
    Example:
      testbed serve --plan plan.json --model opt-125m --layers 4 --hidden 256 --port 8000
      testbed replay --endpoint http://127.0.0.1:8000 --trace t.csv -o records.csv
    """
    try:
        import uvicorn

        from .serve_api import Served, make_app
    except ImportError as e:
        raise InputError(f"testbed serve needs the serve extra ({e.name} is missing): "
                         "pip install -e '.[serve]'") from None
    from .launcher import WorkerFailed
    from .model import scaled_config
    from .serve_cluster import LiveCluster
    from .serve_tokenizer import load_tokenizer

    plan, opts = _options(plan_path, kw)
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    if max_inflight < 1 or not drain_timeout >= 0:
        raise InputError("--max-inflight must be >= 1 and --drain-timeout >= 0")
    from .validate import deployment_for
    dep = deployment_for(plan, opts)
    cfg = scaled_config(opts.model or dep.model, opts.layers, opts.hidden, max_context=opts.max_context)
    tok = load_tokenizer(tokenizer_path, cfg.vocab_size)
    name = served_model_name or cfg._name_or_path
    backend = LiveCluster(dep, opts, max_inflight=max_inflight, echo=_err)   # checks device, KV backend, weights
    n_p, n_d = opts.instances or (dep.prefill.instances, dep.decode.instances)
    from .checks import check_local_workers, check_model_memory
    check_local_workers(n_p + n_d)
    check_model_memory(cfg, opts.dtype, n_p + n_d, opts.device)
    sock = _bind(host, port)
    _err(f"starting {n_p} prefill + {n_d} decode processes ({name}, {backend.base['kv_backend']} KV, "
         f"chunk {dep.chunk_tokens} tokens)...")
    try:
        try:
            backend.start()
        except WorkerFailed as e:
            _err(f"error: {e}")
            sys.exit(EXIT_RUN_FAILED)
        served = Served(backend, tok, model_name=name, max_model_len=int(cfg.max_position_embeddings),
                        vocab_size=int(cfg.vocab_size), eos_token_id=cfg.eos_token_id, api_key=api_key)
        app = make_app(served, on_startup=lambda: backend.attach(asyncio.get_running_loop()),
                       on_shutdown=backend.stop)
        config = uvicorn.Config(app, log_level="warning", access_log=access_log, loop="asyncio",
                                timeout_graceful_shutdown=drain_timeout, lifespan="on")
        server = _server(config, backend, drain_timeout)
        backend.on_failure = lambda why: setattr(server, "should_exit", True)
        where = sock.getsockname()
        url = f"http://{'[' + where[0] + ']' if ':' in where[0] else where[0]}:{where[1]}"
        click.echo(f"serving {name} on {url} (tokenizer: {tok.name}; model length {cfg.max_position_embeddings}); "
                   "Ctrl-C drains and stops", err=True)
        if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            _err(f"warning: listening on {host} without --api-key: anyone who reaches this port can use it")
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass                          # uvicorn re-raises the Ctrl-C it drained for
    except KeyboardInterrupt:
        _err("interrupted while starting")
        backend.failed = backend.failed or "interrupted"
    finally:
        backend.stop()
        sock.close()
    c = backend.counts
    _err(f"stopped: {c['requests']} requests ({c['finished']} finished, {c['refused']} refused with 429), "
         f"{c['tokens']} tokens generated; every process ended")
    if backend.failed:
        sys.exit(EXIT_RUN_FAILED)


def _err(line: str) -> None:
    click.echo(line, err=True)


def _options(plan_path: str, kw: dict):
    from planner.plan import read_plan

    from .run import RunOptions
    plan = read_plan(plan_path)     # the shared flags' values are checked by their click types
    dep = plan.deployment
    instances = None
    if kw["n_prefill"] or kw["n_decode"]:
        if dep.mode != "disaggregated" and not (kw["n_prefill"] and kw["n_decode"]):
            raise InputError("the plan is not disaggregated: give both --prefill and --decode")
        instances = (kw["n_prefill"] or dep.prefill.instances, kw["n_decode"] or dep.decode.instances)
    if dep.mode != "disaggregated" and instances is None:
        raise InputError(f"the plan is {dep.mode}; the testbed serves disaggregated plans (prefill and decode "
                         f"roles). Re-plan with: {replan_command(plan, plan_path, 'TRACE.csv')} - or give "
                         "--prefill N --decode M")
    if dep.windows and instances is None:
        _err(f"note: the plan has {len(dep.windows)} time windows; serve runs each role's peak count "
             f"({dep.prefill.instances} prefill + {dep.decode.instances} decode) the whole time")
    opts = RunOptions(model=kw["model"], layers=kw["layers"], hidden=kw["hidden"], max_context=kw["max_context"],
                      dtype=kw["dtype"], device=kw["device"], weights_dir=kw["weights_dir"], seed=kw["seed"],
                      kv_backend=kw["kv_backend"], decode_kv_tokens=kw["decode_kv_tokens"],
                      classifier_layers=kw["classifier_layers"], classifier_hidden=kw["classifier_hidden"],
                      threads=kw["threads"], pin_cpus=kw["pin_cpus"], heartbeat_timeout_s=kw["heartbeat_timeout"],
                      log_dir=kw["log_dir"], instances=instances, follow_windows=False)
    return plan, opts


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port "
                         "(0 takes any free one)") from None
    sock.listen(2048)
    return sock


def _server(config, backend, drain_timeout):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server; the first Ctrl-C also turns new requests away (503) and says so."""

        def __init__(self, config, backend, drain_timeout):
            super().__init__(config)
            self.backend, self.drain_timeout = backend, drain_timeout

        def handle_exit(self, sig, frame):
            if not self.should_exit:
                self.backend.stopping = True
                _err(f"draining {self.backend.inflight} requests in flight (at most {self.drain_timeout:g} s; "
                     "Ctrl-C again stops at once)...")
            super().handle_exit(sig, frame)
    return Server(config, backend, drain_timeout)


serve_cmd.params.extend(p for p in run_cmd.params if p.name in SHARED)
