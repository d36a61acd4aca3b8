"""Time one ProxMO training iteration of SmolLM2-135M-Instruct on generated ALFWorld games.

Prints the iteration's time split (sampling = generation + env steps, advantages,
learning, weight sync), generated tokens per second, and the share of the
iteration spent computing advantages (the paper reports +1.09% wall time for
ProxMO over GRPO). Defaults are sized for a 2-core CPU: few groups, short
responses, few turns; on a GPU raise them towards the paper's 16 x 8 groups.

    python benchmarks/iteration.py                      # SmolLM2 on ALFWorld, 1 iteration
    python benchmarks/iteration.py --stop-iters 2 --tasks 4 --group-size 8
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from envs import ALFWORLD
from rllib_proxmo.experiments.scale import CPU, env_configs
from rllib_proxmo.rollout.engine_choice import DEFAULT_ENGINE, ENGINES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=CPU.model, help="model alias, directory or hub id")
    parser.add_argument("--env", default=ALFWORLD)
    parser.add_argument("--num-games", type=int, default=CPU.num_games, help="generated ALFWorld games in the split")
    parser.add_argument("--estimator", default="proxmo")
    parser.add_argument("--tasks", type=int, default=CPU.tasks_per_iteration, help="task groups per iteration")
    parser.add_argument("--group-size", type=int, default=CPU.group_size, help="rollouts per task")
    parser.add_argument("--max-turns", type=int, default=CPU.max_turns, help="turns per episode (truncation)")
    parser.add_argument("--max-new-tokens", type=int, default=CPU.max_new_tokens)
    parser.add_argument("--minibatch-size", type=int, default=CPU.minibatch_size, help="turns per optimizer step")
    parser.add_argument("--micro-batch-size", type=int, default=CPU.micro_batch_size)
    parser.add_argument("--num-env-runners", type=int, default=0, help="0 = sample on the driver")
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE, help="the env runners' engine")
    parser.add_argument("--stop-iters", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def main() -> None:
    # Arguments first: importing the ALFWorld stack rewrites sys.argv (docs/design.md).
    args = parse_args()
    import ray

    from rllib_proxmo.algorithm.proxmo import ProxMOConfig
    from rllib_proxmo.experiments.runtime import start_ray

    start_ray(num_cpus=max(2, args.num_env_runners + 1))
    env_config = env_configs(args.env, replace(CPU, num_games=args.num_games))[0]
    model_config = {
        **CPU.model_config(args.env, args.model),
        "max_new_tokens": args.max_new_tokens,
        "engine": args.engine,
    }
    if args.engine != "hf":  # only the HF engine keeps the trunk output the learner could continue from
        model_config.pop("reuse_sampler_trunk", None)
    config = (
        ProxMOConfig()
        .environment(args.env, env_config=env_config)
        .env_runners(num_env_runners=args.num_env_runners)
        .learners(num_learners=0)
        .rl_module(model_config=model_config)
        .training(
            lr=CPU.lr,
            old_logp_source=CPU.old_logp_source,
            llm_env_config=CPU.llm_env_config(args.env),
            estimator=args.estimator,
            group_size=args.group_size,
            tasks_per_iteration=args.tasks,
            max_turns=args.max_turns,
            minibatch_size=args.minibatch_size,
            micro_batch_size=args.micro_batch_size,
        )
        .debugging(seed=0)
    )
    start = time.perf_counter()
    algo = config.build_algo()
    print(f"build_algo: {time.perf_counter() - start:.1f} s (model load, env runner, learner, reference copy)")
    rows = []
    for iteration in range(1, args.stop_iters + 1):
        result = algo.train()
        proxmo, runners, learner = result["proxmo"], result["env_runners"], result["learners"]["default_policy"]
        row = {
            "iteration": iteration,
            "episodes": runners["num_episodes"],
            "turns": runners["num_turns"],
            "success_rate": runners["success_rate"],
            "format_valid_rate": runners["format_valid_rate"],
            "generated_tokens": proxmo["generated_tokens"],
            "response_tokens_trained": learner["num_response_tokens"],
            "generated_tokens_per_s": proxmo["generated_tokens_per_s"],
            "prompt_tokens": proxmo["prompt_tokens"],
            "prompt_tokens_per_generation_s": proxmo["prompt_tokens"] / proxmo["time_generation_s"],
            "shared_prefill_fraction": proxmo["shared_prefill_fraction"],
            "turns_per_sampling_s": proxmo["turns_per_s"],
            "learner_input_tokens_per_s": learner["num_input_tokens"] / proxmo["time_learning_s"],
            **{key: proxmo[key] for key in proxmo if key.startswith("time_")},
            "advantage_share_of_iteration_pct": 100 * proxmo["advantage_time_fraction"],
            "kl": learner["kl"],
            "grad_norm": learner["grad_norm"],
            "num_optimizer_steps": learner["num_optimizer_steps"],
            "ratio_max_deviation": learner["ratio_max_deviation"],
            "sampler_logp_gap_max": learner["sampler_logp_gap_max"],
            "sampler_logp_gap_mean": learner["sampler_logp_gap_mean"],
            "response_cut_rate": runners["response_cut_rate"],
        }
        rows.append(row)
        total = row["time_iteration_s"]
        print(
            f"\niteration {iteration}: {row['episodes']:.0f} episodes, {row['turns']:.0f} turns, "
            f"{row['generated_tokens']:.0f} generated tokens, success {row['success_rate']:.2f}, "
            f"format-valid {row['format_valid_rate']:.2f}"
        )
        for key in (
            "time_sampling_s",
            "time_generation_s",
            "time_env_reset_s",
            "time_env_step_s",
            "time_advantages_s",
            "time_learning_s",
            "time_weight_sync_s",
        ):
            print(f"  {key[5:-2]:<12} {row[key]:9.3f} s  {100 * row[key] / total:6.2f} %")
        print(f"  {'iteration':<12} {total:9.3f} s")
        print(
            f"  sampler: {row['generated_tokens_per_s']:.1f} generated tokens/s, "
            f"{row['prompt_tokens_per_generation_s']:.0f} prompt tokens/s, {row['turns_per_sampling_s']:.2f} turns/s, "
            f"{100 * row['shared_prefill_fraction']:.0f} % of prompt tokens shared; "
            f"learner: {row['learner_input_tokens_per_s']:.0f} tokens/s"
        )
        print(
            f"  optimizer steps: {row['num_optimizer_steps']:.0f}, max |ratio - 1| after the first step: "
            f"{row['ratio_max_deviation']:.4f}, sampler-vs-learner |dlogp| max {row['sampler_logp_gap_max']:.2e} "
            f"mean {row['sampler_logp_gap_mean']:.2e}, responses cut {row['response_cut_rate']:.2f}"
        )
        print(
            f"  advantage step ({args.estimator}): {row['advantage_share_of_iteration_pct']:.3f} % of the iteration "
            f"({'<' if row['advantage_share_of_iteration_pct'] < 1 else '>='} 1 %)"
        )
        assert all(math.isfinite(v) for v in row.values()), row
    algo.stop()
    ray.shutdown()
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "iterations": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
