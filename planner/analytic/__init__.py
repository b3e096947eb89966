"""Analytical queueing models: prefill pools, decode batches, KV transfer, coupled baselines."""
