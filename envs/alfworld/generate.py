"""Generating verified ALFWorld games from the scenes shipped in the ``alfworld`` wheel.

A generated game is an ALFWorld game directory (``game.tw-pddl`` +
``traj_data.json``, see :mod:`envs.alfworld.problem`) for one of the six task
types in one of ALFRED's 120 rooms:

1. a room of the split is drawn among those where the task type makes sense
   (ALFRED's room kinds per goal, a sink/microwave/fridge where needed, a lamp
   for ``look``); the task's object, receptacle or lamp types are drawn from
   what the room holds;
2. every carryable object type of the room gets 1-3 instances (2-4 of the
   target for ``pick2``) in random receptacles that can hold them, never in a
   receptacle of the target type, so no goal holds at the start; lamps stand on
   furniture;
3. the expert (:mod:`envs.alfworld.expert`) plans a walkthrough from the
   game's initial state as the engine parses it, and the walkthrough is played
   on ALFWorld's stock engine: every command must be admissible, and the game
   must be won on the last one and not before. Games failing this are
   discarded (and counted) and redrawn.

Everything is drawn from ``numpy`` generators seeded by ``(seed, split, task
type, index, attempt)``, so a game depends only on these and a bigger set
extends a smaller one. Splits: ``train`` and ``seen`` use ALFRED's 96 training
rooms (with different draws), ``unseen`` its 24 held-out rooms, as ALFWorld's
out-of-distribution split holds out rooms.

Command line (parse before any engine is created: the engine's PDDL translator
rewrites ``sys.argv``)::

    python -m envs.alfworld.generate --split train --num-games 300 --seed 0
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import textworld
from alfworld.gen import constants

from envs.alfworld.engine import make_engine
from envs.alfworld.expert import ExpertPolicy, World
from envs.alfworld.problem import GAME_FILE, GameLayout, PlacedObject, write_game
from envs.alfworld.scenes import (
    DEFAULT_HORIZON_DEG,
    HELD_OUT_SCENES,
    ROTATION_STEP_DEG,
    TRAINING_SCENES,
    Scene,
    format_alfred_id,
    grid_pose,
    load_scene,
    unique_pose,
)
from envs.alfworld.tasks import LAMP_HOLDERS, STATE_CHANGERS, TASK_TYPES, TaskSpec, validate_task_types

logger = logging.getLogger(__name__)

#: Bumped whenever generated games change; part of the cache path.
GENERATOR_VERSION = 1
#: Environment variable overriding the cache directory.
CACHE_ENV_VAR = "RLLIB_PROXMO_ALFWORLD_CACHE"
#: Generated splits and the rooms they draw from.
SPLIT_SCENES: dict[str, tuple[int, ...]] = {
    "train": TRAINING_SCENES,
    "seen": TRAINING_SCENES,
    "unseen": HELD_OUT_SCENES,
}
#: Redraws of one game before generation gives up.
MAX_ATTEMPTS = 20
#: Walkthroughs longer than this are discarded (ALFRED's planner limit is 100 steps).
MAX_WALKTHROUGH_STEPS = 40

#: Instances per carryable type: ``[low, high)``, and for the target of ``pick2``.
INSTANCES = (1, 4)
PICK2_INSTANCES = (2, 5)
#: Largest horizontal offset (metres) of an object from its receptacle's centre.
OBJECT_SPREAD_M = 0.3

_SPLIT_CODES = {name: code for code, name in enumerate(SPLIT_SCENES)}
_TYPE_CODES = {name: code for code, name in enumerate(TASK_TYPES)}
_STATE_ACTION_OBJECTS = {
    "clean": frozenset(constants.VAL_ACTION_OBJECTS["Cleanable"]),
    "heat": frozenset(constants.VAL_ACTION_OBJECTS["Heatable"]),
    "cool": frozenset(constants.VAL_ACTION_OBJECTS["Coolable"]),
}


def default_cache_dir() -> Path:
    """``$RLLIB_PROXMO_ALFWORLD_CACHE``, else ``~/.cache/rllib_proxmo/alfworld``."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "rllib_proxmo" / "alfworld"


def generated_root(cache_dir: Path | None = None) -> Path:
    """Directory holding this generator version's games inside a cache directory."""
    return (cache_dir or default_cache_dir()) / f"generated-v{GENERATOR_VERSION}"


def validate_split(split: str) -> str:
    """``split`` if games can be generated for it.

    Raises:
        ValueError: for any other name.
    """
    if split not in SPLIT_SCENES:
        raise ValueError(f"unknown generated split {split!r}; expected one of {list(SPLIT_SCENES)}")
    return split


def game_name(task_type: str, index: int) -> str:
    """Directory name of the ``index``-th game of a task type, e.g. ``"heat-0003"``."""
    return f"{task_type}-{index:04d}"


def game_schedule(num_games: int, task_types: Sequence[str]) -> list[tuple[str, int]]:
    """``(task type, index)`` of the games of a set: task types in turn, so each gets its share."""
    return [(task_types[j % len(task_types)], j // len(task_types)) for j in range(num_games)]


# --------------------------------------------------------------------------- drawing a game


def _holders(scene: Scene, object_type: str, excluded_type: str = "") -> list[str]:
    return [
        r.alfred_id
        for r in scene.receptacles
        if object_type in constants.VAL_RECEPTACLE_OBJECTS[r.receptacle_type] and r.receptacle_type != excluded_type
    ]


def task_choices(scene: Scene, task_type: str) -> list[TaskSpec]:
    """Every task of a type the room allows, in a fixed order."""
    alfred_type = TASK_TYPES[task_type]
    if scene.room_kind not in constants.GOALS_VALID[alfred_type]:
        return []
    if task_type == "look":
        lamps = scene.lamp_types if scene.receptacles_of_types(LAMP_HOLDERS) else ()
        return [
            TaskSpec(task_type, object_type, toggle_target=lamp)
            for lamp in lamps
            for object_type in scene.object_types
            if _holders(scene, object_type)
        ]
    changer = STATE_CHANGERS[task_type].receptacle_type if task_type in STATE_CHANGERS else ""
    if changer and changer not in scene.receptacle_types:
        return []
    allowed = _STATE_ACTION_OBJECTS.get(task_type)
    tasks = []
    for object_type in scene.object_types:
        if allowed is not None and object_type not in allowed:
            continue
        for parent in sorted(scene.receptacle_types - {changer}):
            if object_type in constants.VAL_RECEPTACLE_OBJECTS[parent] and _holders(scene, object_type, parent):
                tasks.append(TaskSpec(task_type, object_type, parent_target=parent))
    return tasks


@cache
def eligible_scenes(split: str, task_type: str) -> tuple[int, ...]:
    """Rooms of a split with at least one task of the type."""
    return tuple(number for number in SPLIT_SCENES[split] if task_choices(load_scene(number), task_type))


def _place(
    scene: Scene, object_type: str, holders: Sequence[str], count: int, rng: np.random.Generator, taken: set[str]
) -> list[PlacedObject]:
    position_of = {r.alfred_id: r.position for r in scene.receptacles}
    placed = []
    while len(placed) < count:
        holder = holders[rng.integers(len(holders))]
        x, y, z = position_of[holder]
        dx, dz = rng.uniform(-OBJECT_SPREAD_M, OBJECT_SPREAD_M, size=2)
        alfred_id = format_alfred_id(object_type, (x + dx, y + rng.uniform(0.0, 0.2), z + dz))
        if alfred_id not in taken:
            taken.add(alfred_id)
            placed.append(PlacedObject(alfred_id, object_type, holder))
    return placed


def draw_layout(scene: Scene, task: TaskSpec, rng: np.random.Generator) -> GameLayout:
    """Initial state of a game: objects in receptacles, lamps on furniture, the agent's pose."""
    taken: set[str] = set()
    objects: list[PlacedObject] = []
    for object_type in scene.object_types:
        is_target = object_type == task.object_target
        holders = _holders(scene, object_type, task.parent_target if is_target else "")
        if not holders:
            continue
        low, high = PICK2_INSTANCES if is_target and task.task_type == "pick2" else INSTANCES
        objects.extend(_place(scene, object_type, holders, int(rng.integers(low, high)), rng, taken))
    lamp_holders = [r.alfred_id for r in scene.receptacles_of_types(LAMP_HOLDERS)]
    for lamp in scene.lamp_types:
        if lamp_holders:
            objects.extend(_place(scene, lamp, lamp_holders, 1, rng, taken))

    x_m, z_m = scene.floor_points[rng.integers(len(scene.floor_points))]
    start = grid_pose(x_m, z_m, ROTATION_STEP_DEG * int(rng.integers(4)), DEFAULT_HORIZON_DEG)
    agent_pose = unique_pose(start, {r.pose for r in scene.receptacles})
    return GameLayout(scene=scene, task=task, objects=tuple(objects), agent_pose=agent_pose)


# --------------------------------------------------------------------------- verification


class VerificationError(Exception):
    """A generated game whose walkthrough does not win on the engine."""


def verify_game(engine: textworld.core.Environment, game_file: Path, task: TaskSpec) -> list[str]:
    """Plan the expert's walkthrough of a game and play it on ``engine``.

    Args:
        engine: A TextWorld engine (loaded with any game; ``game_file`` is loaded into it).
        game_file: The game to verify.
        task: Its goal.

    Returns:
        The walkthrough commands.

    Raises:
        VerificationError: when no plan is found, a command is not admissible,
            or the game is not won exactly at the last command.
    """
    engine.load(str(game_file))
    state = engine.reset()
    policy = ExpertPolicy(task)
    plan = policy.plan(World.from_game_state(state), max_steps=MAX_WALKTHROUGH_STEPS)
    if not plan:
        raise VerificationError("the expert found no walkthrough within the step limit")
    for step, command in enumerate(plan):
        if state["won"]:
            raise VerificationError(f"won before step {step} of {len(plan)}")
        if command.text not in state["admissible_commands"]:
            raise VerificationError(f"step {step}: {command.text!r} is not admissible")
        state, _, _ = engine.step(command.text)
    if not state["won"]:
        raise VerificationError(f"not won after the {len(plan)}-step walkthrough")
    return [command.text for command in plan]


# --------------------------------------------------------------------------- game sets


@dataclass
class GenerationStats:
    """Counts of one :func:`generate_games` call, per task type.

    Attributes:
        generated: Games written and verified.
        discarded: Drawn games that failed verification.
        reused: Games already present in the output directory.
        seconds: Wall time spent generating, seconds.
    """

    generated: dict[str, int] = field(default_factory=dict)
    discarded: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, counter: dict[str, int], task_type: str) -> None:
        counter[task_type] = counter.get(task_type, 0) + 1


@contextmanager
def _exclusive_lock(directory: Path) -> Iterator[None]:
    """Serialise generation into ``directory`` across processes and threads."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Generator:
    """Draws, writes and verifies the games of one split and seed, reusing one engine."""

    def __init__(self, split_dir: Path, split: str, seed: int, stats: GenerationStats) -> None:
        self.split_dir = split_dir
        self.split = split
        self.seed = seed
        self.stats = stats
        self._engine: textworld.core.Environment | None = None

    def generate(self, task_type: str, index: int) -> Path:
        final_dir = self.split_dir / game_name(task_type, index)
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], _TYPE_CODES[task_type], index, attempt])
            scenes = eligible_scenes(self.split, task_type)
            scene = load_scene(int(scenes[rng.integers(len(scenes))]))
            tasks = task_choices(scene, task_type)
            task = tasks[rng.integers(len(tasks))]
            layout = draw_layout(scene, task, rng)
            templates = task.sentence_templates()
            sentence = templates[rng.integers(len(templates))]
            provenance = {
                "generator": {
                    "version": GENERATOR_VERSION,
                    "split": self.split,
                    "seed": self.seed,
                    "index": index,
                    "attempt": attempt,
                }
            }
            problem_name = f"{self.split}_{self.seed}_{task_type}_{index}"
            work_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-", dir=self.split_dir))
            try:
                game_file = write_game(work_dir, problem_name, layout, sentence, None, provenance)
                walkthrough = verify_game(self._engine_for(game_file), game_file, task)
            except VerificationError as error:
                shutil.rmtree(work_dir)
                self.stats.count(self.stats.discarded, task_type)
                logger.info("discarded %s attempt %d (%s): %s", final_dir.name, attempt, scene.floor_plan, error)
                continue
            write_game(work_dir, problem_name, layout, sentence, walkthrough, provenance)
            os.replace(work_dir, final_dir)
            self.stats.count(self.stats.generated, task_type)
            return final_dir / GAME_FILE
        raise RuntimeError(
            f"no verified {task_type!r} game for {self.split}/seed{self.seed}/{final_dir.name} "
            f"in {MAX_ATTEMPTS} attempts; see the log for the reasons"
        )

    def _engine_for(self, game_file: Path) -> textworld.core.Environment:
        if self._engine is None:
            self._engine = make_engine(game_file, fast=False)
        return self._engine


def generate_games(
    out_dir: Path | str,
    split: str,
    num_games: int,
    seed: int,
    task_types: Sequence[str] | None = None,
    stats: GenerationStats | None = None,
) -> list[Path]:
    """Generate (or reuse) a deterministic set of verified ALFWorld games.

    The games are ``out_dir/<split>/seed<seed>/<task type>-<index>/``; task
    types take turns, so ``num_games=12`` over all six types gives indices 0-1
    of each. Games already in ``out_dir`` are reused, so a bigger set extends a
    smaller one and concurrent callers (serialised by a file lock) share work.

    Args:
        out_dir: Root directory of generated games.
        split: ``"train"``, ``"seen"`` or ``"unseen"``.
        num_games: How many games.
        seed: Seed of all random draws.
        task_types: Short task types to generate (all six by default).
        stats: Filled with counts and wall time when given.

    Returns:
        Paths of the games' ``game.tw-pddl`` files, in schedule order.

    Raises:
        ValueError: for an unknown split or task type, or ``num_games < 1``.
    """
    validate_split(split)
    types = validate_task_types(task_types)
    if num_games < 1:
        raise ValueError(f"num_games must be at least 1, got {num_games}")
    stats = stats if stats is not None else GenerationStats()
    split_dir = Path(out_dir) / split / f"seed{seed}"
    started = time.perf_counter()
    paths = []
    with _exclusive_lock(split_dir):
        generator = _Generator(split_dir, split, seed, stats)
        for task_type, index in game_schedule(num_games, types):
            game_file = split_dir / game_name(task_type, index) / GAME_FILE
            if game_file.is_file():
                stats.count(stats.reused, task_type)
            else:
                game_file = generator.generate(task_type, index)
            paths.append(game_file)
    stats.seconds += time.perf_counter() - started
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: generate a split's games into the cache (or ``--out``) and print counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=list(SPLIT_SCENES), required=True)
    parser.add_argument("--num-games", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task-types", nargs="+", choices=list(TASK_TYPES), default=None)
    parser.add_argument("--out", type=Path, default=None, help="root directory (default: the environment's cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out_dir = args.out if args.out is not None else generated_root()
    stats = GenerationStats()
    paths = generate_games(out_dir, args.split, args.num_games, args.seed, args.task_types, stats)
    made = sum(stats.generated.values())
    print(f"{len(paths)} games in {out_dir / args.split / f'seed{args.seed}'}")
    rate = f" ({made / stats.seconds:.2f} games/s)" if made else ""
    print(f"generated {made}, reused {sum(stats.reused.values())}, {stats.seconds:.1f} s{rate}")
    for task_type in validate_task_types(args.task_types):
        generated, discarded = stats.generated.get(task_type, 0), stats.discarded.get(task_type, 0)
        if generated + discarded:
            print(f"  {task_type:6s} verified {generated}/{generated + discarded}")


if __name__ == "__main__":
    main()
