"""WebShop environment throughput and reference-policy scores, on one CPU core.

Prints (and ``run`` returns): the time to build the default generated shop
(catalogue, BM25 index, goals), environment steps per second (time spent inside
``reset``/``step`` only, over oracle and random episodes), search latency
(mean and 95th percentile over the test instructions, after one warm-up
query), and the mean score and
success rate of the oracle and of uniform random play on the test goals.

Usage: ``python benchmarks/webshop_throughput.py [--episodes N]``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np

from envs.webshop.env import WebShopEnv
from envs.webshop.policies import EpisodeResult, OraclePolicy, RandomPolicy, run_episode
from envs.webshop.shop import load_shop


class _EnvTimer(gym.Wrapper):
    """Accumulates the wall time spent in ``reset`` and ``step`` and counts steps."""

    def __init__(self, env: WebShopEnv):
        super().__init__(env)
        self.seconds = 0.0
        self.steps = 0

    def reset(self, **kwargs: Any):
        start = time.perf_counter()
        result = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - start
        return result

    def step(self, action: str):
        start = time.perf_counter()
        result = self.env.step(action)
        self.seconds += time.perf_counter() - start
        self.steps += 1
        return result


def _summary(results: list[EpisodeResult]) -> tuple[float, float]:
    return float(np.mean([result.score for result in results])), float(np.mean([result.won for result in results]))


def run(num_episodes: int = 500) -> dict[str, float | int]:
    """Measure on core 0; ``num_episodes`` test goals are played by each policy.

    Returns a flat dict of the printed figures.
    """
    previous_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        load_shop.cache_clear()
        start = time.perf_counter()
        env = WebShopEnv(split="test")
        build_seconds = time.perf_counter() - start

        env.shop.search.search(env.goals[0].instruction_text)
        latencies = []
        for goal in env.goals:
            start = time.perf_counter()
            env.shop.search.search(goal.instruction_text)
            latencies.append(time.perf_counter() - start)

        timed = _EnvTimer(env)
        task_ids = [index % env.num_tasks for index in range(num_episodes)]
        oracle = [run_episode(timed, lambda _: OraclePolicy.for_env(env), task_id) for task_id in task_ids]
        rng = np.random.default_rng(0)
        random_play = [run_episode(timed, lambda _: RandomPolicy(rng), task_id) for task_id in task_ids]
    finally:
        os.sched_setaffinity(0, previous_affinity)

    oracle_score, oracle_success = _summary(oracle)
    random_score, random_success = _summary(random_play)
    latencies_ms = 1000.0 * np.asarray(latencies)
    return {
        "products": len(env.shop.catalog),
        "test_goals": env.num_tasks,
        "episodes_per_policy": num_episodes,
        "build_s": build_seconds,
        "steps_per_s": timed.steps / timed.seconds,
        "search_ms_mean": float(latencies_ms.mean()),
        "search_ms_p95": float(np.percentile(latencies_ms, 95)),
        "oracle_score": oracle_score,
        "oracle_success": oracle_success,
        "random_score": random_score,
        "random_success": random_success,
    }


def print_report(figures: dict[str, float | int]) -> None:
    """Print the figures returned by :func:`run`."""
    print(
        f"WebShop (generated): {figures['products']:.0f} products, {figures['test_goals']:.0f} test goals, "
        f"{figures['episodes_per_policy']:.0f} episodes per policy, one core"
    )
    print(f"  shop build                 {figures['build_s']:.2f} s")
    print(f"  env steps/s                {figures['steps_per_s']:.0f}")
    print(f"  search latency mean / p95  {figures['search_ms_mean']:.3f} / {figures['search_ms_p95']:.3f} ms")
    print(f"  oracle score / success     {figures['oracle_score']:.3f} / {figures['oracle_success']:.3f}")
    print(f"  random score / success     {figures['random_score']:.3f} / {figures['random_success']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=500, help="test goals played by each policy")
    args = parser.parse_args(argv)
    print_report(run(args.episodes))


if __name__ == "__main__":
    main()
