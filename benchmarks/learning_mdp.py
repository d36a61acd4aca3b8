"""Sample efficiency of each advantage estimator: policy-gradient training on the household text MDP.

``benchmarks/credit_assignment.py`` scores advantages against the truth on a fixed rollout policy;
this benchmark trains a policy with them and counts the episodes it needs. The agent is a linear
softmax policy over the admissible commands of ``Household-v0`` (:mod:`envs.household.env`)::

    logit(s, c) = x(s)^T W y(c) + b^T y(c),    pi(c | s) = softmax over the admissible c

where ``x(s)`` is the binary bag of words of the task sentence and the observation text, and
``y(c)`` that of the command text (tokens of two or more word characters, as scikit-learn's default
tokenizer, so instance numbers are dropped). ``W`` and ``b`` start at zero (the uniform random
policy).

Protocol, per seed, estimator and noise level (the training loop of ProxMO in miniature):

1. A pool of ``--task-pool`` tasks (Household task ids) is drawn from the seed.
2. Every iteration draws ``--tasks`` K of them and plays a group of ``--episodes`` N rollouts of
   each from the task's start state (horizon ``--horizon``, observations with lexical noise
   ``--noise``) with the current policy.
3. Advantages of the whole batch: ``compute_advantages(group_id, episode_id, t, reward, state,
   success, config)`` with the estimator and the paper's hyperparameters, ``state`` being the raw
   observation text.
4. One Adam step (``--lr``) on the REINFORCE loss ``-mean_t A_t log pi(a_t | s_t)`` over the
   batch's steps (the batch is on-policy, so this is also PPO's first step: ratio 1, no clip).

The tasks drawn, the policy's sampling and the rendering draw from generators seeded by the seed
only, so every estimator and noise level of a seed starts from the same pool and the same first
batch (paired comparisons). Adam makes the step size independent of the scale of the advantages
(GRPO's z-scores and PSA's returns differ in scale), so one learning rate serves all estimators.

Figures, mean +- std over ``--seeds`` seeds:

- the learning curve: success rate of each iteration's K x N training episodes;
- episodes to 50 % / 80 %: training episodes played until the rolling success (mean over the last
  ``--window`` iterations) first reaches the threshold; seeds that never reach it are counted
  (``reached k/n``) and left out of the mean;
- mean success over all iterations (the area under the learning curve, per iteration);
- final success: mean success of the last ``--window`` iterations.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.learning_mdp --json benchmarks/results/learning_mdp.json
--png benchmarks/results/learning_mdp.png --markdown benchmarks/results/learning_mdp.md``
(defaults: every estimator of ``rllib_proxmo.advantages.ESTIMATORS``, noise none / mild / heavy,
20 seeds, 8 tasks x 8 rollouts, 50 iterations, Adam lr 0.02: the best of 0.005 to 0.2 for ``grpo``
over 4 seeds, 60 iterations, without noise; 2 worker processes). Noise levels as in the
credit-assignment testbed: 0.07 gives about the paper's 30-36 % singleton steps, 1 makes nearly
every observation unique.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.credit_assignment import parse_noise
from envs.household.env import HouseholdEnv
from rllib_proxmo.advantages import ESTIMATORS, AdvantageConfig, compute_advantages
from rllib_proxmo.experiments.plots import plot_success_bands

TOKEN = re.compile(r"(?u)\b\w\w+\b")
THRESHOLDS = (0.5, 0.8)


class Vocabulary:
    """Token -> index, assigned in order of first sight, up to ``size`` tokens."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._index: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}

    def indices(self, text: str) -> list[int]:
        """Indices of the tokens of ``text`` (with repeats)."""
        indices = self._cache.get(text)
        if indices is None:
            indices = [self._index.setdefault(token, len(self._index)) for token in TOKEN.findall(text.lower())]
            if len(self._index) > self.size:
                raise ValueError(f"more than {self.size} distinct tokens; raise --vocabulary")
            self._cache[text] = indices
        return indices

    def bags(self, texts: list[str]) -> np.ndarray:
        """(len(texts), size) float 0/1: which tokens occur in each text."""
        bags = np.zeros((len(texts), self.size))
        for row, text in enumerate(texts):
            bags[row, self.indices(text)] = 1.0
        return bags


class SoftmaxPolicy:
    """Linear softmax policy over admissible commands on bag-of-words features (see the module docstring).

    Args:
        vocabulary_size: tokens the bags can hold (V).
        lr: Adam's learning rate.
    """

    def __init__(self, vocabulary_size: int, lr: float) -> None:
        self.vocabulary = Vocabulary(vocabulary_size)
        self.params = {"W": np.zeros((vocabulary_size, vocabulary_size)), "b": np.zeros(vocabulary_size)}
        self.lr, self.betas, self.eps = lr, (0.9, 0.999), 1e-8
        self._moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in self.params.items()}
        self._steps = 0

    def features(self, context: str, commands: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``x`` (V,) of the context and ``Y`` (C, V) of the C commands."""
        return self.vocabulary.bags([context])[0], self.vocabulary.bags(commands)

    def probabilities(self, x: np.ndarray, commands: np.ndarray) -> np.ndarray:
        """(C,) ``pi(c | s)`` of the commands with features ``commands`` (C, V) in context ``x`` (V,)."""
        logits = commands @ (x @ self.params["W"] + self.params["b"])
        logits -= logits.max()
        weights = np.exp(logits)
        return weights / weights.sum()

    @staticmethod
    def score_direction(commands: np.ndarray, pi: np.ndarray, action: int) -> np.ndarray:
        """(V,) ``d = y(a) - sum_c pi(c | s) y(c)``: ``grad_W log pi(a | s) = x d^T``, ``grad_b = d``.

        Args:
            commands: (C, V) ``y(c)`` of the admissible commands.
            pi: (C,) their probabilities.
            action: index of the command taken.
        """
        return commands[action] - pi @ commands

    def update(self, contexts: np.ndarray, score_directions: np.ndarray, advantages: np.ndarray) -> None:
        """One Adam step on ``-mean_t A_t log pi(a_t | s_t)``.

        Args:
            contexts: (n, V) ``x(s_t)``.
            score_directions: (n, V) :meth:`score_direction` of each step.
            advantages: (n,) ``A_t``.
        """
        weighted = score_directions * (advantages / advantages.size)[:, None]
        # gradients of the loss (the negative objective)
        grads = {"W": -(contexts.T @ weighted), "b": -weighted.sum(axis=0)}
        self._steps += 1
        beta1, beta2 = self.betas
        for name, grad in grads.items():
            m, v = self._moments[name]
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad**2
            m_hat = m / (1 - beta1**self._steps)
            v_hat = v / (1 - beta2**self._steps)
            self.params[name] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclass
class Batch:
    """The steps of one iteration's K x N episodes, in (group, episode, t) order; n steps."""

    group_id: np.ndarray  # (n,)
    episode_id: np.ndarray  # (n,)
    t: np.ndarray  # (n,)
    reward: np.ndarray  # (n,)
    state: list[str]  # n observation texts
    success: np.ndarray  # (n,) bool
    contexts: np.ndarray  # (n, V)
    score_directions: np.ndarray  # (n, V)
    episode_success: np.ndarray  # (K * N,) bool


def play_group(
    env: HouseholdEnv, policy: SoftmaxPolicy, task_id: int, episodes: int, rng: np.random.Generator
) -> list[dict[str, list]]:
    """N episodes of task ``task_id`` from its start state with actions sampled from ``policy``."""
    played = []
    for _ in range(episodes):
        obs, info = env.reset(options={"task_id": task_id})
        steps: dict[str, list] = {"state": [], "reward": [], "context": [], "direction": []}
        done = False
        while not done:
            commands = info["admissible_actions"]
            x, y = policy.features(f"{info['task']} {obs}", commands)
            pi = policy.probabilities(x, y)
            action = min(int(np.searchsorted(np.cumsum(pi), rng.random(), side="right")), len(commands) - 1)
            steps["state"].append(obs)
            steps["context"].append(x)
            steps["direction"].append(policy.score_direction(y, pi, action))
            obs, reward, terminated, truncated, info = env.step(commands[action])
            steps["reward"].append(reward)
            done = terminated or truncated
        steps["won"] = info["won"]
        played.append(steps)
    return played


def play_batch(
    env: HouseholdEnv, policy: SoftmaxPolicy, task_ids: np.ndarray, episodes: int, rng: np.random.Generator
) -> Batch:
    """A group of ``episodes`` rollouts per task of ``task_ids``, flattened to step columns."""
    columns: dict[str, list] = {key: [] for key in ("group_id", "episode_id", "t", "reward", "success")}
    states, contexts, directions, won = [], [], [], []
    for group, task_id in enumerate(task_ids):
        for steps in play_group(env, policy, int(task_id), episodes, rng):
            n = len(steps["reward"])
            columns["group_id"].append(np.full(n, group))
            columns["episode_id"].append(np.full(n, len(won)))
            columns["t"].append(np.arange(n))
            columns["reward"].append(np.array(steps["reward"]))
            columns["success"].append(np.full(n, steps["won"]))
            states += steps["state"]
            contexts += steps["context"]
            directions += steps["direction"]
            won.append(steps["won"])
    return Batch(
        **{key: np.concatenate(parts) for key, parts in columns.items()},
        state=states,
        contexts=np.stack(contexts),
        score_directions=np.stack(directions),
        episode_success=np.array(won),
    )


def train(seed: int, estimator: str, noise: float, args: argparse.Namespace) -> list[float]:
    """Train one policy; the success rate of each iteration's training episodes."""
    config = AdvantageConfig(estimator=estimator)
    task_rng = np.random.default_rng([seed, 0])
    policy_rng = np.random.default_rng([seed, 1])
    pool = task_rng.choice(2**31, size=args.task_pool, replace=False)
    env = HouseholdEnv(n_rooms=args.rooms, max_steps=args.horizon, noise=noise)
    env.reset(seed=seed)  # seeds the rendering's generator
    policy = SoftmaxPolicy(args.vocabulary, args.lr)
    curve = []
    for _ in range(args.iterations):
        batch = play_batch(
            env, policy, task_rng.choice(pool, size=args.tasks, replace=False), args.episodes, policy_rng
        )
        advantages = compute_advantages(
            batch.group_id, batch.episode_id, batch.t, batch.reward, batch.state, batch.success, config
        )
        policy.update(batch.contexts, batch.score_directions, advantages)
        curve.append(float(batch.episode_success.mean()))
    return curve


def episodes_to_reach(curve: list[float], threshold: float, window: int, episodes_per_iteration: int) -> int | None:
    """Training episodes played when the rolling success (last ``window`` iterations) first reaches ``threshold``."""
    rolling = np.convolve(curve, np.ones(window) / window, mode="valid")
    reached = np.flatnonzero(rolling >= threshold)
    return None if not reached.size else int((reached[0] + window) * episodes_per_iteration)


def summarise(curves: list[list[float]], args: argparse.Namespace) -> dict:
    """Mean/std learning curve, episodes to each threshold and final success over the seeds' ``curves``."""
    per_iteration = args.tasks * args.episodes
    array = np.array(curves)
    final = array[:, -args.window :].mean(axis=1)
    summary = {
        "curve_mean": array.mean(axis=0).tolist(),
        "curve_std": array.std(axis=0).tolist(),
        "auc_mean": float(array.mean(axis=1).mean()),
        "auc_std": float(array.mean(axis=1).std()),
        "final_mean": float(final.mean()),
        "final_std": float(final.std()),
        "final_per_seed": final.tolist(),
    }
    for threshold in THRESHOLDS:
        reached = [episodes_to_reach(curve, threshold, args.window, per_iteration) for curve in curves]
        hits = [r for r in reached if r is not None]
        summary[f"episodes_to_{threshold:g}"] = {
            "per_seed": reached,
            "reached": len(hits),
            "mean": float(np.mean(hits)) if hits else None,
            "std": float(np.std(hits)) if hits else None,
        }
    return summary


def _run(job: tuple) -> tuple:
    seed, estimator, label, noise, args = job
    return seed, estimator, label, train(seed, estimator, noise, args)


def markdown_table(summaries: dict[str, dict[str, dict]], args: argparse.Namespace) -> str:
    """One row per (noise level, estimator): episodes to 50 % / 80 % and final success."""
    lines = [
        "| noise | estimator | episodes to 50 % | episodes to 80 % | mean success, all iterations | final success |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, noise in args.noise:
        for estimator in args.estimators:
            summary = summaries[label][estimator]
            cells = []
            for threshold in THRESHOLDS:
                figure = summary[f"episodes_to_{threshold:g}"]
                reached = f"{figure['reached']}/{args.seeds}"
                cells.append(
                    f"{figure['mean']:.0f} ± {figure['std']:.0f} (reached {reached})"
                    if figure["reached"]
                    else f"not reached (0/{args.seeds})"
                )
            auc = f"{summary['auc_mean']:.3f} ± {summary['auc_std']:.3f}"
            final = f"{summary['final_mean']:.3f} ± {summary['final_std']:.3f}"
            lines.append(f"| {label} ({noise:g}) | {estimator} | {cells[0]} | {cells[1]} | {auc} | {final} |")
    return "\n".join(lines)


def paired_table(summaries: dict[str, dict[str, dict]], args: argparse.Namespace, baseline: str = "grpo") -> str:
    """Per noise level, each estimator's final success minus ``baseline``'s on the same seed."""
    others = [e for e in args.estimators if e != baseline]
    lines = [
        f"| noise | {' | '.join(f'{e} - {baseline}' for e in others)} |",
        f"| --- |{' --- |' * len(others)}",
    ]
    for label, noise in args.noise:
        reference = np.array(summaries[label][baseline]["final_per_seed"])
        cells = []
        for estimator in others:
            delta = np.array(summaries[label][estimator]["final_per_seed"]) - reference
            cells.append(f"{delta.mean():+.3f} ± {delta.std():.3f} ({int((delta > 0).sum())}/{delta.size})")
        lines.append(f"| {label} ({noise:g}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (mean ± std over them)")
    parser.add_argument(
        "--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS, help="estimators to train with"
    )
    parser.add_argument(
        "--noise",
        type=parse_noise,
        nargs="+",
        default=[("none", 0.0), ("mild", 0.07), ("heavy", 1.0)],
        metavar="LABEL=P",
        help="lexical noise levels of the observations",
    )
    parser.add_argument("--iterations", type=int, default=50, help="training iterations (one update each)")
    parser.add_argument("--tasks", type=int, default=8, help="task groups K per iteration")
    parser.add_argument("--episodes", type=int, default=8, help="rollouts N per task group")
    parser.add_argument("--task-pool", type=int, default=32, help="training tasks per seed; iterations draw from it")
    parser.add_argument("--horizon", type=int, default=15, help="step limit H of an episode")
    parser.add_argument("--rooms", type=int, default=6, help="rooms per house")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam learning rate")
    parser.add_argument("--vocabulary", type=int, default=256, help="bag-of-words vocabulary size")
    parser.add_argument("--window", type=int, default=5, help="iterations of the rolling and the final success")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--json", type=Path, help="write the curves and summaries here")
    parser.add_argument("--png", type=Path, help="write the learning curves here (one panel per noise level)")
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    args = parser.parse_args(argv)
    for name in ("seeds", "iterations", "tasks", "horizon", "vocabulary", "window", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.episodes < 2:
        parser.error(f"--episodes must be >= 2 (a group needs rollouts to compare), got {args.episodes}")
    if args.task_pool < args.tasks:
        parser.error(f"--task-pool must be >= --tasks ({args.tasks}), got {args.task_pool}")
    if args.window > args.iterations:
        parser.error(f"--window must be <= --iterations ({args.iterations}), got {args.window}")
    if not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if len({label for label, _ in args.noise}) != len(args.noise):
        parser.error("--noise labels must be distinct")
    HouseholdEnv(n_rooms=args.rooms, max_steps=args.horizon)  # refuses a bad --rooms or --horizon now
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    jobs = [
        (seed, estimator, label, noise, args)
        for label, noise in args.noise
        for seed in range(args.seed, args.seed + args.seeds)
        for estimator in args.estimators
    ]
    results = []
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap(_run, jobs):
            results.append(result)
            if len(results) % len(args.estimators) == 0:
                print(f"{len(results)}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)
    curves: dict[str, dict[str, list]] = {label: {e: [] for e in args.estimators} for label, _ in args.noise}
    for _, estimator, label, curve in sorted(results):
        curves[label][estimator].append(curve)
    summaries = {
        label: {estimator: summarise(curves[label][estimator], args) for estimator in args.estimators}
        for label, _ in args.noise
    }
    print(
        f"policy-gradient training on Household-v0: {args.seeds} seeds, {args.iterations} iterations x "
        f"{args.tasks} tasks x {args.episodes} rollouts from a pool of {args.task_pool} tasks, H={args.horizon}, "
        f"{args.rooms} rooms, Adam lr={args.lr}; rolling window {args.window} iterations; mean ± std over seeds\n"
    )
    table = markdown_table(summaries, args)
    if "grpo" in args.estimators and len(args.estimators) > 1:
        table += (
            "\n\nPaired differences of final success against grpo, mean ± std over seeds "
            "(seeds where the estimator is higher):\n\n" + paired_table(summaries, args)
        )
    print(table)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if args.json:
        config = {k: v for k, v in vars(args).items() if k not in ("json", "png", "markdown")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": config, "curves": curves, "summaries": summaries}, indent=1))
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
        print(f"wrote {args.markdown}")
    if args.png:
        for label, noise in args.noise:
            groups = {e: [list(enumerate(c, start=1)) for c in curves[label][e]] for e in args.estimators}
            path = args.png.with_name(f"{args.png.stem}_{label}{args.png.suffix}")
            plot_success_bands(groups, path, f"Household-v0, noise {label} ({noise:g}): training success")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
