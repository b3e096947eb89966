"""Serving engines as the planner models them: vLLM (V1 engine), SGLang and TensorRT-LLM.

An engine is data (`EngineConfig`: token budget, running-request limit, chunking, how a
step is formed, admission and preemption, KV blocks, memory fraction, CUDA graphs, CPU
time per step) plus the small policy the simulator runs for it (planner.sim). Defaults per
engine are cited in `planner/engines/defaults.csv`; the CPU time per step is fitted to
real benchmark runs (`planner/data/engine_fits.csv`, `python -m planner.engines.fit`).
"""
