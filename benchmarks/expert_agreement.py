"""How well does the searching expert play the held-out split, and how closely does a policy imitate it there?

The warm start imitates ALFWorld's searching expert (``expert="search"``); whether that can
transfer depends on two figures this benchmark prints for the main job's held-out split:

1. **The expert's own success** within each ``--step-limits`` entry (its episodes played
   without detours, one per held-out game), by task type: the ceiling of imitation at
   the main job's turn limit.
2. With ``--model``, **step agreement**: on the expert's own trajectories of the first
   ``--episodes`` held-out games, the share of states where the model's greedy answer is
   the expert's command (the prompt, chat encoding and answer constraint the env runner
   samples with: held to the admissible commands where the main job holds them), by
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

import gymnasium as gym
import numpy as np

from envs.llm_wrappers import answer_choices


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


class _AdmissibleRecorder(gym.Wrapper):
    """Keeps ``info["admissible_actions"]`` of every reset and step: entry k is turn k's list."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.admissible: list[list[str]] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.admissible = [list(info["admissible_actions"])]
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.admissible.append(list(info["admissible_actions"]))
        return observation, reward, terminated, truncated, info


def step_agreement(
    model_name: str,
    episodes: list[Any],
    tokenizer_of_turns: Any,
    admissible: list[list[list[str]]],
    template: Any,
    held: bool,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Greedy answers of ``model_name`` on every turn of ``episodes``, compared with the expert's, by verb.

    ``admissible`` holds, per episode and turn, the env's admissible commands; with ``held``
    every answer is held to them token by token (the answers ``template`` admits that fit in
    ``max_new_tokens``), as ``constrain_to_admissible`` samples. ``"admissible"`` counts the
    answers naming one of them.
    """
    from envs.llm_wrappers import parse_action
    from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm
    from rllib_proxmo.rollout.chat import answer_ids
    from rllib_proxmo.rollout.engines import HFEngine, SamplingParams

    model, tokenizer = load_causal_lm(model_name)
    engine = HFEngine(model, tokenizer)
    agree: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    named_admissible = 0
    for episode, commands in zip(episodes, admissible, strict=False):
        for turn, listed in zip(episode.turns, commands, strict=False):
            expert = parse_action(tokenizer_of_turns.decode(turn.response_ids), require_think=False) or ""
            verb = expert.split(" ", 1)[0]
            answers = answer_choices(listed, template=template) if held else None
            choices = None if answers is None else answer_ids(tokenizer, answers, max_new_tokens)[0] or None
            longest = len(turn.response_ids) + 8 if choices is None else max(map(len, choices))
            greedy = SamplingParams(max_new_tokens=longest, temperature=0.0)
            (generation,) = engine.generate([turn.prompt_ids], greedy, None if choices is None else [choices])
            answer = parse_action(tokenizer.decode(generation.token_ids), require_think=False)
            seen[verb] += 1
            agree[verb] += answer == expert
            named_admissible += answer in listed
    return {
        "all": {"agree": sum(agree.values()), "states": sum(seen.values())},
        "by_verb": {verb: {"agree": agree[verb], "states": seen[verb]} for verb in sorted(seen)},
        "admissible": named_admissible,
        "held_answers": held,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm
    from rllib_proxmo.rollout.env_runner import SamplerSettings
    from rllib_proxmo.sft.demonstrations import play_expert_episode

    args, job_argv = parse_args(argv)
    env, config, task_ids = held_out_expert_env(job_argv)
    env = _AdmissibleRecorder(env)
    held = bool(config.model_config.get("constrain_to_admissible"))
    _, tokenizer = load_causal_lm(config.model_config["model_name_or_path"])
    start = time.perf_counter()
    episodes, admissible = [], []
    for index, task_id in enumerate(task_ids):
        episode = play_expert_episode(
            env,
            tokenizer,
            task_id=task_id,
            seed=index,
            detour_prob=0.0,
            rng=np.random.default_rng(index),
            max_turns=max(args.step_limits),
            system_prompt=SamplerSettings.from_model_config(config.model_config).system_prompt,
        )
        episodes.append(episode)
        admissible.append(env.admissible)
    template = env.get_wrapper_attr("template")
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
        agreement = step_agreement(
            args.model, scored, tokenizer, admissible, template, held, config.model_config["max_new_tokens"]
        )
        results["model"] = args.model
        results["agreement"] = agreement
        results["agreement_seconds"] = time.perf_counter() - start
        total = agreement["all"]
        answers = "answers held to the admissible commands" if held else "free answers"
        print(f"step agreement of {args.model} on the expert's states of {len(scored)} held-out games ({answers}):")
        for verb, counts in [("all", total), *agreement["by_verb"].items()]:
            print(f"  {verb:8s} {counts['agree']}/{counts['states']} = {counts['agree'] / counts['states']:.2f}")
        print(f"  answers naming an admissible command: {agreement['admissible']}/{total['states']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"job_args": job_argv, **results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
