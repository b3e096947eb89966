"""`planner export`: from a plan to launch commands and manifests."""
from __future__ import annotations

import click

from planner.cli.params import OutDir


@click.command("export")
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
              help="Plan JSON written by `planner recommend -o plan.json`.")
@click.option("--to", "target", required=True, type=click.Choice(["vllm", "sglang", "dynamo", "k8s"]),
              help="vllm / sglang: launch scripts; dynamo: a DynamoGraphDeployment; k8s: Deployments + Services.")
@click.option("-o", "--output", "out_dir", required=True, type=OutDir(),
              help="Folder to write the files into (created if missing).")
@click.option("--engine", type=click.Choice(["vllm", "sglang"]), default=None,
              help="Engine inside dynamo / k8s files [default: the plan's engine].")
@click.option("--model-path", default=None,
              help="Model to serve (Hugging Face id or folder) [default: the catalog's id for the plan's model].")
@click.option("--name", default=None, help="Resource name in dynamo / k8s files [default: MODEL-MODE].")
@click.option("--image", default=None, help="Container image in dynamo / k8s files [default: the engine's].")
def export(plan_path, target, out_dir, engine, model_path, name, image):
    """Write what it takes to run PLAN: `vllm serve` / `python -m sglang.launch_server`
    commands per role with the plan's tensor parallelism, token budget, running-request
    limit and memory fraction; for disaggregated plans, prefill and decode roles with the
    engine's KV connector (vLLM's NixlConnector, SGLang's --disaggregation-mode) and a router;
    or a Dynamo graph / Kubernetes YAML with GPU requests and replica counts.

    \b
    Examples:
      planner recommend --trace traces/mixed.csv --gpu a100 --for-testbed -o plan.json
      planner export --plan plan.json --to vllm -o deploy/
      planner export --plan plan.json --to k8s --engine sglang -o deploy/
    """
    from planner.export import render, write
    from planner.plan import read_plan

    plan = read_plan(plan_path)
    paths = write(render(plan, target, engine=engine, model=model_path, name=name, image=image), out_dir)
    click.echo(f"wrote {', '.join(p.name for p in paths)} to {out_dir}")
