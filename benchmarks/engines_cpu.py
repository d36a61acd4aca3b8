"""The Hugging Face and the vLLM engine side by side on the CPU (vLLM's CPU build, ``make install``).

Part 1, in this process, both engines over the main job's policy (SmolLM2-135M-Instruct,
fp32, ``--threads`` torch threads, set before vLLM starts and kept by it):

- build: seconds to a ready engine (HF: the module as loaded; vLLM: ``vllm.LLM`` with
  its import and KV-cache allocation);
- new tokens/s on the main job's first ALFWorld prompts (compact template, about 260
  tokens each): ``--groups`` distinct prompts, then ``--groups`` groups of
  ``--group-size`` identical prompts, as an iteration sends them;
- sampler gap: max |engine log-prob - learner log-prob| of every drawn token;
- vLLM weight push: seconds of a push of the trained top layers (``trainable_layers``
  of the CPU default) and of a full push, and the gap after each.

Part 2 (unless ``--stop-iters 0``): ``benchmarks/iteration.py`` in a subprocess per engine,
one remote env runner, the CPU default's iteration: mean iteration, sampling and
generation time, generated tokens/s and the learner's sampler gap.

    python benchmarks/engines_cpu.py                     # both parts, about 10 minutes on 2 cores
    python benchmarks/engines_cpu.py --stop-iters 0 --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    from rllib_proxmo.experiments.scale import CPU

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=CPU.model, help="model alias, directory or hub id")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both engines (a runner's CPUs)")
    parser.add_argument("--groups", type=int, default=CPU.tasks_per_iteration, help="distinct prompts / groups")
    parser.add_argument("--group-size", type=int, default=CPU.group_size, help="identical prompts per group")
    parser.add_argument("--max-new-tokens", type=int, default=CPU.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--stop-iters", type=int, default=2, help="iterations per engine in part 2 (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def alfworld_prompts(tokenizer: Any, count: int) -> list[tuple[int, ...]]:
    """The first prompts of ``count`` generated ALFWorld training games, as the main job renders them."""
    from envs import ALFWORLD
    from envs.llm_wrappers import make_llm_env
    from rllib_proxmo.experiments.scale import CPU, env_configs
    from rllib_proxmo.rollout.chat import prompt_ids

    env_config = env_configs(ALFWORLD, replace(CPU, num_games=max(count, CPU.num_games)))[0]
    env = make_llm_env(ALFWORLD, **CPU.llm_env_config(ALFWORLD), **env_config)
    prompts = []
    for index in range(count):
        prompt, _ = env.reset(seed=index, options={"task_id": env.unwrapped.task_ids[index]})
        prompts.append(prompt_ids(tokenizer, prompt, CPU.system_prompt))
    env.close()
    return prompts


def sampler_gap(learner: Any, prompts: list, generations: list, temperature: float) -> float:
    """Largest |engine log-prob - learner log-prob| over every drawn token."""
    import torch

    from rllib_proxmo.algorithm.torch.llm_rl_module import ATTENTION_MASK, INPUT_IDS, SCORED_TOKENS, TOKEN_LOGP

    learner.temperature = temperature
    gaps = []
    for prompt, generation in zip(prompts, generations, strict=True):
        ids = torch.tensor([list(prompt) + list(generation.token_ids)])
        batch = {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(generation.token_ids)}
        with torch.no_grad():
            scored = learner._forward(batch)[TOKEN_LOGP][0].float()
        gaps.append(float((scored - torch.tensor(generation.logprobs)).abs().max()))
    return max(gaps)


def time_generation(engine: Any, prompts: list, params: Any) -> tuple[float, list]:
    """(new tokens/s, generations) of one ``generate`` call."""
    start = time.perf_counter()
    generations = engine.generate(prompts, params)
    return sum(len(g.token_ids) for g in generations) / (time.perf_counter() - start), generations


def engines_side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: build, throughput, gap and push figures of both engines in this process."""
    import torch

    from envs import ALFWORLD
    from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
    from rllib_proxmo.experiments.scale import CPU
    from rllib_proxmo.rollout.engines import HFEngine, SamplingParams
    from rllib_proxmo.rollout.engines.vllm_engine import VLLMEngine

    torch.set_num_threads(args.threads)
    config = {**CPU.model_config(ALFWORLD, args.model), "temperature": args.temperature}
    config.pop("reuse_sampler_trunk", None)
    learner = LLMRLModule(model_config=config, inference_only=False)
    hf_runner = LLMRLModule(model_config=config, inference_only=True)
    vllm_runner = LLMRLModule(model_config=config, inference_only=True)
    prompts = alfworld_prompts(hf_runner.tokenizer, args.groups)
    grouped = [prompt for prompt in prompts for _ in range(args.group_size)]
    longest = max(len(prompt) for prompt in prompts)
    figures: dict[str, Any] = {"threads": args.threads, "prompt_tokens_mean": statistics.mean(map(len, prompts))}

    start = time.perf_counter()
    engines = {"hf": HFEngine(hf_runner.model, hf_runner.tokenizer)}
    figures["hf_build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    engines["vllm"] = VLLMEngine.build(
        vllm_runner, config, torch.device("cpu"), longest, args.max_new_tokens, num_threads=args.threads
    )
    figures["vllm_build_s"] = time.perf_counter() - start

    params = SamplingParams(args.max_new_tokens, args.temperature, 1.0, seed=0)
    for name, engine in engines.items():
        engine.generate(prompts[:1], params)  # warm-up
        for label, batch in (("distinct", prompts), ("groups", grouped)):
            figures[f"{name}_{label}_new_tokens_per_s"], generations = time_generation(engine, batch, params)
            figures[f"{name}_{label}_sampler_gap_max"] = sampler_gap(learner, batch, generations, args.temperature)

    engine = engines["vllm"]
    for label, subset in (("trained_layers", True), ("full", False)):
        with torch.no_grad():  # an update: every trained weight moves
            for param in learner.model.parameters():
                if param.requires_grad or not subset:
                    param.add_(0.01 * torch.randn_like(param))
        if subset:
            state = learner.get_state(inference_only=True)
        else:  # every weight, the tied output layer as its embedding
            tied = {"lm_head.weight"} if engine.push.tied_embeddings else set()
            state = {k: v.detach().clone() for k, v in learner.model.state_dict().items() if k not in tied}
        vllm_runner.set_state(state)
        start = time.perf_counter()
        engine.update_weights(state)
        figures[f"vllm_push_{label}_s"] = time.perf_counter() - start
        figures[f"vllm_push_{label}_tensors"] = len(engine.push.weights(state, full=False))
        _, generations = time_generation(engine, grouped, params)
        figures[f"vllm_push_{label}_sampler_gap_max"] = sampler_gap(learner, grouped, generations, args.temperature)
    return figures


def iterations(args: argparse.Namespace, engine: str) -> dict[str, float]:
    """Part 2: ``benchmarks/iteration.py`` with one remote env runner on ``engine``; means over the iterations."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "iteration.json"
        command = [sys.executable, str(REPO / "benchmarks" / "iteration.py"), "--model", args.model]
        command += ["--engine", engine, "--num-env-runners", "1", "--stop-iters", str(args.stop_iters)]
        subprocess.run([*command, "--json", str(output)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(output.read_text())["iterations"]
    keys = ("time_iteration_s", "time_sampling_s", "time_generation_s", "generated_tokens_per_s")
    means = {f"{engine}_{key}": statistics.mean(row[key] for row in rows) for key in keys}
    means[f"{engine}_sampler_logp_gap_max"] = max(row["sampler_logp_gap_max"] for row in rows)
    return means


def main() -> None:
    args = parse_args()
    figures = engines_side_by_side(args)
    for engine in ("hf", "vllm") if args.stop_iters else ():
        figures.update(iterations(args, engine))
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for label in ("distinct", "groups"):
        ratio = figures[f"vllm_{label}_new_tokens_per_s"] / figures[f"hf_{label}_new_tokens_per_s"]
        print(f"vLLM / HF new tokens/s, {label}: {ratio:.2f}x")
    if args.stop_iters:
        print(f"vLLM / HF iteration time: {figures['vllm_time_iteration_s'] / figures['hf_time_iteration_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
