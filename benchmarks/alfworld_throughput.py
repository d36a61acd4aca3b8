"""ALFWorld engine throughput: TextWorld's stock PDDL engine and the fast engine, side by side, on one core.

Both engines are built the way ``ALFWorld-v0`` builds them
(:func:`envs.alfworld.engine.make_engine`, ``fast=False`` / ``fast=True``) on
the same generated games (one per task type in turn, ``train`` split). On
each game a seeded policy plays ``steps`` commands -- admissible ones, and
one in ten from a few unknown commands -- with a reset every
``episode_steps`` steps or when the game is won; then the game is reset
``resets`` more times. Both engines receive the same commands (a digest of
their observations says whether they saw the same games).

Printed (and returned by :func:`run`): steps/s (time inside ``step`` only,
over all games, and on the slowest game), resets/s and the mean reset time
(time inside ``reset`` after the game is loaded), the first load of a game,
and for the fast engine the reload of a game it has loaded before; the last
column is fast/stock.

Usage: ``python benchmarks/alfworld_throughput.py [--num-games 6] [--steps 200]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

from envs.alfworld.engine import make_engine
from envs.alfworld.generate import generate_games, generated_root

#: Commands the engine does not know, played one time in ten.
UNKNOWN_COMMANDS = ("", "jump", "go to the moon")
UNKNOWN_RATE = 0.1


def _measure_engine(
    game_files: list[Path], fast: bool, steps: int, episode_steps: int, resets: int, seed: int
) -> dict[str, Any]:
    """Times of one engine kind over all games; see the module docstring for what is played."""
    step_seconds, reset_seconds, load_seconds, reload_seconds = [], [], [], []
    digest = hashlib.sha256()
    for game_index, game_file in enumerate(game_files):
        start = time.perf_counter()
        engine = make_engine(game_file, fast=fast)
        load_seconds.append(time.perf_counter() - start)

        rng = random.Random(seed + game_index)
        seconds = 0.0
        state = engine.reset()
        played = 0
        for _ in range(steps):
            if rng.random() < UNKNOWN_RATE:
                command = rng.choice(UNKNOWN_COMMANDS)
            else:
                command = rng.choice(state["admissible_commands"])
            start = time.perf_counter()
            state, _, done = engine.step(command)
            seconds += time.perf_counter() - start
            digest.update(state.feedback.encode())
            played += 1
            if done or played == episode_steps:
                state = engine.reset()
                played = 0
        step_seconds.append(seconds)

        for _ in range(resets):
            start = time.perf_counter()
            engine.reset()
            reset_seconds.append(time.perf_counter() - start)

        if fast:
            start = time.perf_counter()
            engine.load(str(game_file))
            reload_seconds.append(time.perf_counter() - start)
        engine.close()

    total_steps = steps * len(game_files)
    return {
        "steps_per_s": total_steps / sum(step_seconds),
        "slowest_game_steps_per_s": steps / max(step_seconds),
        "resets_per_s": len(reset_seconds) / sum(reset_seconds),
        "reset_ms": 1000 * sum(reset_seconds) / len(reset_seconds),
        "load_s": sum(load_seconds) / len(load_seconds),
        "reload_ms": 1000 * sum(reload_seconds) / len(reload_seconds) if reload_seconds else None,
        "digest": digest.hexdigest(),
    }


def run(
    num_games: int = 6,
    steps: int = 200,
    *,
    episode_steps: int = 50,
    resets: int = 5,
    seed: int = 0,
    games_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure both engines on core 0 (the affinity is restored afterwards).

    Args:
        num_games: Generated training games to play (task types in turn).
        steps: Commands played per game and engine.
        episode_steps: Steps between resets while playing.
        resets: Extra resets timed per game and engine.
        seed: Seed of the games and of the policy.
        games_dir: Root of generated games (default: the environment's cache).

    Returns:
        ``{"stock": {...}, "fast": {...}, "speedup": {"steps", "resets"},
        "identical": bool, "num_games", "steps"}``; per engine
        ``steps_per_s``, ``slowest_game_steps_per_s``, ``resets_per_s``,
        ``reset_ms``, ``load_s``, ``reload_ms`` (fast only) and ``digest``.

    Raises:
        ValueError: for a non-positive count.
    """
    counts = {"num_games": num_games, "steps": steps, "episode_steps": episode_steps, "resets": resets}
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    game_files = generate_games(games_dir or generated_root(), "train", num_games, seed)
    previous_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        results = {
            kind: _measure_engine(game_files, kind == "fast", steps, episode_steps, resets, seed)
            for kind in ("stock", "fast")
        }
    finally:
        os.sched_setaffinity(0, previous_affinity)
    stock, fast = results["stock"], results["fast"]
    return {
        **results,
        "speedup": {
            "steps": fast["steps_per_s"] / stock["steps_per_s"],
            "resets": fast["resets_per_s"] / stock["resets_per_s"],
        },
        "identical": stock["digest"] == fast["digest"],
        "num_games": num_games,
        "steps": steps,
    }


def print_report(result: dict[str, Any]) -> None:
    stock, fast, speedup = result["stock"], result["fast"], result["speedup"]
    print(f"ALFWorld engines, {result['num_games']} games x {result['steps']} steps, one core")
    print(f"{'':28s}{'stock':>10s}{'fast':>10s}{'fast/stock':>12s}")
    rows = [
        ("steps/s", "steps_per_s", "{:10.1f}", f"{speedup['steps']:11.1f}x"),
        ("steps/s (slowest game)", "slowest_game_steps_per_s", "{:10.1f}", ""),
        ("resets/s", "resets_per_s", "{:10.1f}", f"{speedup['resets']:11.1f}x"),
        ("reset (ms)", "reset_ms", "{:10.1f}", ""),
        ("first load (s)", "load_s", "{:10.2f}", ""),
    ]
    for label, key, number, ratio in rows:
        print(f"{label:28s}{number.format(stock[key])}{number.format(fast[key])}{ratio:>12s}")
    print(f"{'reload of a loaded game (ms)':28s}{'-':>10s}{fast['reload_ms']:10.1f}")
    print(f"same observations: {'yes' if result['identical'] else 'NO'}")


def main(argv: list[str] | None = None) -> None:
    # Parse first: the PDDL translator rewrites sys.argv.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-games", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200, help="commands per game and engine")
    parser.add_argument("--episode-steps", type=int, default=50, help="steps between resets while playing")
    parser.add_argument("--resets", type=int, default=5, help="extra resets timed per game and engine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--games-dir", type=Path, default=None, help="root of generated games (default: the cache)")
    args = parser.parse_args(argv)
    print_report(
        run(
            args.num_games,
            args.steps,
            episode_steps=args.episode_steps,
            resets=args.resets,
            seed=args.seed,
            games_dir=args.games_dir,
        )
    )


if __name__ == "__main__":
    main()
