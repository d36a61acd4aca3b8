"""How well does the searching expert play the held-out split, and how closely does a policy imitate it there?

The warm start imitates ALFWorld's searching expert (``expert="search"``); whether that can
transfer depends on two figures this benchmark prints for the main job's held-out split:

1. **The expert's own success** within each ``--step-limits`` entry (its episodes played
   without detours, one per held-out game), by task type: the ceiling of imitation at
   the main job's turn limit.
2. With ``--model``, **step agreement**: on the expert's own trajectories of the first
   ``--episodes`` held-out games, the share of states where the model's greedy answer is
   the expert's command (the prompt and chat encoding the env runner samples from), by
   the command's verb (``go``, ``take``, ``move``, ``open``, ``use``, ...). A policy that
   sweeps well but rarely ``take``\\ s the task's object shows it here, with the count.

    python benchmarks/expert_agreement.py --model results/<run>/warm_start \\
        --json benchmarks/results/expert_agreement.json

Every flag the main job takes can follow ``--`` and sets the env (e.g.
``-- --num-games 192 --llm-env-config '{"history_length": 0}'``); without them, the main
job's defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="policy to measure step agreement of (a model directory or name)")
    parser.add_argument("--episodes", type=int, default=16, help="held-out games whose expert states are scored")
    parser.add_argument("--step-limits", type=int, nargs="+", default=[8, 10, 12, 15])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args, rest = parser.parse_known_args(argv)
    if args.episodes < 1 or min(args.step_limits) < 1:
        parser.error("--episodes and --step-limits must be >= 1")
    return args, [arg for arg in rest if arg != "--"]


def held_out_expert_env(job_argv: list[str]) -> tuple[Any, Any, Any]:
    """The main job's held-out env (with ``job_argv``) with its expert on, its config and task ids."""
    from rllib_proxmo.experiments import main_job
    from rllib_proxmo.experiments.scale import EXPERT_ENV_CONFIGS
    from rllib_proxmo.rollout.env_factory import make_text_env

    job = main_job.parse_args([*job_argv, "--no-mlflow"])
    config = main_job.build_config(job)
    _, held_out = main_job.split_configs(job)
    config.env_config = {**held_out, **EXPERT_ENV_CONFIGS.get(job.env, {})}
    env = make_text_env(config, worker_index=0, index=0)
    task_ids = list(getattr(env.unwrapped, "task_ids", None) or [])
    if not task_ids:
        raise ValueError(f"{job.env} lists no task_ids: the benchmark plays each held-out game once")
    return env, config, task_ids


def expert_success(episodes: list[Any], step_limits: list[int]) -> dict[str, dict[str, float]]:
    """Share of ``episodes`` the expert won within each step limit, overall and by task type."""
    by_type: dict[str, list[Any]] = defaultdict(list)
    for episode in episodes:
        by_type["all"].append(episode)
        if episode.task_type:
            by_type[episode.task_type].append(episode)
    return {
        kind: {str(limit): float(np.mean([e.won and len(e.turns) <= limit for e in played])) for limit in step_limits}
        for kind, played in sorted(by_type.items())
    }


def step_agreement(model_name: str, episodes: list[Any], tokenizer_of_turns: Any) -> dict[str, Any]:
    """Greedy answers of ``model_name`` on every turn of ``episodes``, compared with the expert's, by verb."""
    import torch

    from envs.llm_wrappers import parse_action
    from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm

    model, tokenizer = load_causal_lm(model_name)
    agree: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for episode in episodes:
        for turn in episode.turns:
            expert = parse_action(tokenizer_of_turns.decode(turn.response_ids), require_think=False) or ""
            verb = expert.split(" ", 1)[0]
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([turn.prompt_ids]),
                    attention_mask=torch.ones(1, len(turn.prompt_ids), dtype=torch.long),
                    max_new_tokens=len(turn.response_ids) + 8,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            answer = parse_action(tokenizer.decode(out[0, len(turn.prompt_ids) :]), require_think=False)
            seen[verb] += 1
            agree[verb] += answer == expert
    return {
        "all": {"agree": sum(agree.values()), "states": sum(seen.values())},
        "by_verb": {verb: {"agree": agree[verb], "states": seen[verb]} for verb in sorted(seen)},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm
    from rllib_proxmo.sft.demonstrations import play_expert_episode

    args, job_argv = parse_args(argv)
    env, config, task_ids = held_out_expert_env(job_argv)
    _, tokenizer = load_causal_lm(config.model_config["model_name_or_path"])
    start = time.perf_counter()
    episodes = [
        play_expert_episode(
            env,
            tokenizer,
            task_id=task_id,
            seed=index,
            detour_prob=0.0,
            rng=np.random.default_rng(index),
            max_turns=max(args.step_limits),
        )
        for index, task_id in enumerate(task_ids)
    ]
    env.close()
    results: dict[str, Any] = {
        "held_out_games": len(episodes),
        "expert_success": expert_success(episodes, args.step_limits),
        "expert_seconds": time.perf_counter() - start,
    }
    print(f"searching expert on {len(episodes)} held-out games, success within each step limit:")
    for kind, rates in results["expert_success"].items():
        print(f"  {kind:8s} " + "  ".join(f"{limit} steps {rate:.2f}" for limit, rate in rates.items()))
    if args.model:
        start = time.perf_counter()
        scored = episodes[: args.episodes]
        agreement = step_agreement(args.model, scored, tokenizer)
        results["model"] = args.model
        results["agreement"] = agreement
        results["agreement_seconds"] = time.perf_counter() - start
        total = agreement["all"]
        print(f"step agreement of {args.model} on the expert's states of {len(scored)} held-out games:")
        for verb, counts in [("all", total), *agreement["by_verb"].items()]:
            print(f"  {verb:8s} {counts['agree']}/{counts['states']} = {counts['agree'] / counts['states']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"job_args": job_argv, **results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
