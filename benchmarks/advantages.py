"""Time and memory of the advantage estimators on ALFWorld-like batches, on one core.

Batches mimic an ALFWorld training iteration: K tasks x N=8 rollouts, each
task a household with its own receptacles and objects; every rollout starts
from the task's initial observation and wanders with ALFWorld-style feedback
("You arrive at cabinet 3. On the cabinet 3, you see a mug 1.", "Nothing
happens.", ...). Two sizes: the release's 16 tasks x 8 rollouts with episodes
of up to 50 steps (about 3.8k steps), and 128 x 8 x 50 (about 51k steps).

For each estimator it prints the median wall time over repeats and the peak
memory traced during one call (tracemalloc sees NumPy and SciPy buffers),
then the ratio to GRPO. For the small batch it also times the release's
layout for reference: one dense B x B similarity matrix for the whole batch
and a Python loop over rows (``--skip-dense`` to leave it out).

Usage: ``python benchmarks/advantages.py [--repeats 5] [--seed 0]``
"""

from __future__ import annotations

import os

# One core, one thread: set before NumPy/SciPy load their BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import functools
import statistics
import time
import tracemalloc

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from rllib_proxmo.advantages import AdvantageConfig, advantage_diagnostics, compute_advantages, returns_to_go

PAPER = AdvantageConfig()

RECEPTACLES = [
    "cabinet",
    "countertop",
    "drawer",
    "fridge",
    "microwave",
    "sinkbasin",
    "stoveburner",
    "shelf",
    "diningtable",
    "coffeemachine",
    "garbagecan",
    "toaster",
    "sidetable",
    "dresser",
    "bed",
    "sofa",
]
OBJECTS = [
    "mug",
    "apple",
    "bread",
    "cup",
    "knife",
    "spatula",
    "potato",
    "tomato",
    "egg",
    "lettuce",
    "plate",
    "bowl",
    "pan",
    "pot",
    "spoon",
    "fork",
    "keychain",
    "book",
    "pencil",
    "cellphone",
    "remotecontrol",
]


def _listing(items: list[str]) -> str:
    if not items:
        return "nothing"
    if len(items) == 1:
        return f"a {items[0]}"
    return ", ".join(f"a {x}" for x in items[:-1]) + f", and a {items[-1]}"


def alfworld_like_batch(num_tasks: int, rollouts: int, max_len: int, min_len: int, seed: int) -> dict:
    """Columns of a batch of ``num_tasks * rollouts`` episodes with ALFWorld-style texts."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("group_id", "episode_id", "t", "reward", "state", "success")}
    episode = 0
    for task in range(num_tasks):
        receptacles = [
            f"{r} {i}"
            for r in rng.choice(RECEPTACLES, size=8, replace=False)
            for i in range(1, int(rng.integers(1, 5)))
        ]
        contents = {
            r: [f"{o} {rng.integers(1, 4)}" for o in rng.choice(OBJECTS, size=int(rng.integers(0, 4)))]
            for r in receptacles
        }
        goal = f"put a {rng.choice(OBJECTS)} in {rng.choice(RECEPTACLES)}"
        initial = (
            "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, "
            f"you see {_listing(receptacles)}.\n\nYour task is to: {goal}."
        )
        for _ in range(rollouts):
            length = int(rng.integers(min_len, max_len + 1))
            won = bool(rng.random() < 0.4)
            for k in range(length):
                if k == 0:
                    text = initial
                else:
                    where = receptacles[int(rng.integers(len(receptacles)))]
                    seen = contents[where]
                    if rng.random() < 0.35:  # the rollout moved things around: a new arrangement
                        seen = [f"{o} {rng.integers(1, 4)}" for o in rng.choice(OBJECTS, size=int(rng.integers(1, 4)))]
                    kind = rng.random()
                    if kind < 0.55:
                        text = f"You arrive at {where}. On the {where}, you see {_listing(seen)}."
                    elif kind < 0.7:
                        text = f"You open the {where}. The {where} is open. In it, you see {_listing(seen)}."
                    elif kind < 0.8 and seen:
                        text = f"You pick up the {seen[0]} from the {where}."
                    else:
                        text = "Nothing happens."
                cols["group_id"].append(task)
                cols["episode_id"].append(episode)
                cols["t"].append(k)
                cols["reward"].append(1.0 if won and k == length - 1 else 0.0)
                cols["state"].append(text)
                cols["success"].append(won)
            episode += 1
    return {k: (v if k == "state" else np.asarray(v)) for k, v in cols.items()}


def release_layout_proxmo(batch: dict, tau: float = PAPER.tau, gamma: float = PAPER.gamma) -> np.ndarray:
    """The step term as the release lays it out: one B x B matrix, a Python loop per row."""
    vectors = TfidfVectorizer(max_features=1024).fit_transform(batch["state"])
    similarity = (vectors @ vectors.T).toarray()
    rtg = returns_to_go(batch["episode_id"], batch["t"], batch["reward"], gamma)
    out = np.empty(len(rtg))
    for i in range(len(rtg)):
        mask = batch["group_id"] == batch["group_id"][i]
        logits = similarity[i, mask] / tau
        weights = np.exp(logits - logits.max())
        out[i] = rtg[i] - weights @ rtg[mask] / weights.sum()
    return out


def measure(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB of one call)."""
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dense", action="store_true", help="skip the release-layout reference")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    sizes = [("16 tasks x 8 x (10..50) steps", 16, 10, 50), ("128 tasks x 8 x 50 steps", 128, 50, 50)]
    goals = {sizes[0][0]: 0.050, sizes[1][0]: 1.0}
    print(f"one core, median of {args.repeats} repeats; peak = tracemalloc peak of one call\n")
    for label, tasks, min_len, max_len in sizes:
        batch = alfworld_like_batch(tasks, 8, max_len, min_len, args.seed)
        n = len(batch["t"])
        singletons = advantage_diagnostics(**batch, estimator="grpo")["gigpo_singleton_fraction"]
        print(f"{label}: {n} steps, {len(set(batch['state']))} distinct states, GiGPO singleton steps {singletons:.0%}")
        print(f"  {'estimator':<28}{'time (ms)':>10}{'peak (MiB)':>12}{'x grpo':>8}")
        timings = {}
        for estimator in ("grpo", "gigpo", "proxmo", "proxmo (group scope)"):
            scope = "group" if "group" in estimator else "same_step"
            name = estimator.split()[0]
            run = functools.partial(compute_advantages, **batch, estimator=name, psa_scope=scope)
            seconds, peak = measure(run, args.repeats)
            timings[estimator] = seconds
            print(f"  {estimator:<28}{1e3 * seconds:>10.1f}{peak:>12.1f}{seconds / timings['grpo']:>8.1f}")
        if tasks == 16 and not args.skip_dense:
            seconds, peak = measure(functools.partial(release_layout_proxmo, batch), 1)
            ratio = seconds / timings["grpo"]
            print(f"  {'release layout (B x B, loop)':<28}{1e3 * seconds:>10.1f}{peak:>12.1f}{ratio:>8.1f}")
        goal = goals[label]
        verdict = "meets" if timings["proxmo"] <= goal else "MISSES"
        print(
            f"  proxmo {1e3 * timings['proxmo']:.1f} ms {verdict} the goal of {1e3 * goal:.0f} ms; "
            f"proxmo/grpo = {timings['proxmo'] / timings['grpo']:.1f}\n"
        )


if __name__ == "__main__":
    main()
