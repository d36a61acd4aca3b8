"""Padding in the HF engine: one left-padded batch vs length buckets, on real evaluation prompts.

The main job's evaluation plays ``--episodes`` unseen ALFWorld games at once, so every turn
sends that many prompts of different lengths (a first observation lists the whole room, later
ones a receptacle) to one ``generate`` call. This benchmark collects such a call's prompts
(the compact CPU prompt, the searching expert's path through each game to ``--turn``), then
generates them with the SmolLM2-135M policy greedily, first padded to one width
(``max_padding=inf``) and then in length buckets (the engine's default
:data:`~rllib_proxmo.rollout.engines.hf_engine.MAX_PADDING`), side by side in one process:
seconds per call, padded prompt tokens, and whether both give the same tokens.

    python benchmarks/length_buckets.py --episodes 48 --turn 2 --json benchmarks/results/length_buckets_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=48, help="prompts per call (unseen games)")
    parser.add_argument("--turn", type=int, default=2, help="expert steps taken before the prompt")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per setting (the best is kept)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def collect_prompts(episodes: int, turn: int) -> list[str]:
    """The compact prompts of ``episodes`` unseen games after ``turn`` steps of the searching expert."""
    from envs import ALFWORLD
    from envs.llm_wrappers import make_llm_env
    from rllib_proxmo.experiments.scale import CPU, EXPERT_ENV_CONFIGS, env_configs

    _, unseen = env_configs(ALFWORLD, CPU)
    env = make_llm_env(ALFWORLD, **CPU.llm_env_config(ALFWORLD), **unseen, **EXPERT_ENV_CONFIGS[ALFWORLD])
    prompts = []
    try:
        for game in env.unwrapped.task_ids[:episodes]:
            prompt, info = env.reset(options={"task_id": game})
            for _ in range(turn):
                if info["expert_action"] is None:
                    break
                prompt, *_, info = env.step(f"<action>{info['expert_action']}</action>")
            prompts.append(prompt)
    finally:
        env.close()
    return prompts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
    from rllib_proxmo.experiments.scale import CPU
    from rllib_proxmo.rollout.chat import prompt_ids
    from rllib_proxmo.rollout.engines import HFEngine, SamplingParams
    from rllib_proxmo.rollout.engines.hf_engine import MAX_PADDING, length_buckets

    policy = LLMRLModule(model_config={"model_name_or_path": CPU.model, "dtype": "float32"}, inference_only=True)
    prompts = [
        prompt_ids(policy.tokenizer, text, CPU.system_prompt) for text in collect_prompts(args.episodes, args.turn)
    ]
    lengths = [len(p) for p in prompts]
    params = SamplingParams(max_new_tokens=CPU.max_new_tokens, temperature=0.0, seed=0)
    figures: dict = {
        "episodes": len(prompts),
        "turn": args.turn,
        "prompt_tokens": sum(lengths),
        "prompt_tokens_min_max": [min(lengths), max(lengths)],
        "torch_threads": torch.get_num_threads(),
    }
    outputs = {}
    for name, padding in (("one_batch", float("inf")), ("length_buckets", MAX_PADDING)):
        engine = HFEngine(policy.model, policy.tokenizer, max_padding=padding)
        buckets = length_buckets(lengths, padding)
        padded = sum(max(lengths[i] for i in bucket) * len(bucket) for bucket in buckets)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[name] = engine.generate(prompts, params)
            times.append(time.perf_counter() - start)
        figures[name] = {"buckets": len(buckets), "padded_prompt_tokens": padded, "seconds": min(times)}
        print(f"{name}: {len(buckets)} bucket(s), {padded} padded prompt tokens, {min(times):.1f} s per call")
    figures["speedup"] = figures["one_batch"]["seconds"] / figures["length_buckets"]["seconds"]
    figures["same_tokens"] = [g.token_ids for g in outputs["one_batch"]] == [
        g.token_ids for g in outputs["length_buckets"]
    ]
    print(f"length buckets {figures['speedup']:.2f}x faster; same tokens: {figures['same_tokens']}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
