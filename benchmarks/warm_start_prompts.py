"""Which CPU prompt does the warm start teach best? Candidates side by side, same demonstrations budget.

For every ``--templates`` entry: the main job's warm start (expert demonstrations, top-layer
fine-tuning) with that prompt, then the warm-started SmolLM2-135M plays every training game
greedily and ``--samples`` times at temperature 1 (what RL samples). Prints, per template, the
warm start's last expert-answer probability and time, success and admissible rate of both
plays and the mean prompt length; writes a JSON.

    python benchmarks/warm_start_prompts.py --templates alfworld-compact alfworld-numbered \\
        --out benchmarks/results/warm_start_prompts -- --env-config '{"task_types": ["pick"]}'

Every flag the main job takes can follow ``--`` (e.g. ``-- --sft-episodes 24 --max-turns 10``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", nargs="+", default=["alfworld-compact", "alfworld-numbered"])
    parser.add_argument("--samples", type=int, default=2, help="temperature-1 plays per training game")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_start_prompts"))
    args, rest = parser.parse_known_args(argv)
    return args, [arg for arg in rest if arg != "--"]


def play(config, model_dir: Path, *, explore: bool, samples: int, seed: int = 0) -> dict[str, float]:
    """``samples`` plays of every training game of ``config``'s env by the model in ``model_dir``.

    The main job's env runner plays them: at the training temperature (``explore``) or greedily.
    """
    from rllib_proxmo.rollout.env_factory import make_text_env
    from rllib_proxmo.rollout.env_runner import PROMPT_TOKENS, GroupedEnvRunner
    from rllib_proxmo.rollout.episodes import GroupRequest
    from rllib_proxmo.rollout.metrics import episode_metrics

    config = config.copy(copy_frozen=False).rl_module(
        model_config={**config.model_config, "model_name_or_path": str(model_dir)}
    )
    probe = make_text_env(config, worker_index=0, index=0)
    task_ids = config.task_ids or getattr(probe.unwrapped, "task_ids", None)
    probe.close()
    if not task_ids:
        raise ValueError("the benchmark plays every training task: the env must list its task_ids (ALFWorld does)")
    runner = GroupedEnvRunner(config=config)
    try:
        groups = [GroupRequest(f"game{index}", seed, samples, task_id) for index, task_id in enumerate(task_ids)]
        episodes = runner.sample(groups=groups, explore=explore, seed=seed, max_turns=config.max_turns)
        prompt_tokens = runner.get_metrics()[PROMPT_TOKENS]
    finally:
        runner.stop()
    metrics = episode_metrics(episodes)
    return {
        "success_rate": metrics["success_rate"],
        "admissible_rate": metrics["admissible_action_rate"],
        "mean_prompt_tokens": prompt_tokens / metrics["num_turns"],
        "episodes": metrics["num_episodes"],
    }


def main(argv: list[str] | None = None) -> dict:
    args, job_flags = parse_args(argv)
    # Arguments first: importing the ALFWorld stack rewrites sys.argv (docs/design.md).
    from rllib_proxmo.experiments import main_job
    from rllib_proxmo.experiments.runtime import quiet_framework_output

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    quiet_framework_output()
    results = {}
    for template in args.templates:
        flags = [*job_flags, "--no-mlflow", "--llm-env-config", json.dumps({"template": template})]
        job = main_job.parse_args([*flags, "--output", str(out / template)])
        config = main_job.build_config(job)
        start = time.perf_counter()
        model_dir = main_job.warm_start_model(job, config, out / template, None)
        summary = json.loads((model_dir / "warm_start.json").read_text())
        row = {
            "warm_start_s": time.perf_counter() - start,
            "answer_prob": summary["epochs"][-1]["answer_prob"],
            "greedy": play(config, model_dir, explore=False, samples=1),
            "sampled": play(config, model_dir, explore=True, samples=args.samples),
        }
        results[template] = row
        plays = " | ".join(
            f"{name} success {row[name]['success_rate']:.2f} (admissible {row[name]['admissible_rate']:.2f})"
            for name in ("greedy", "sampled")
        )
        print(
            f"{template}: warm start {row['warm_start_s']:.0f} s, expert-answer prob {row['answer_prob']:.2f} | "
            f"{plays} | prompt {row['greedy']['mean_prompt_tokens']:.0f} tokens",
            flush=True,
        )
    (out / "warm_start_prompts.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(out)}, "job_flags": job_flags, "results": results}, indent=2)
    )
    return results


if __name__ == "__main__":
    main()
