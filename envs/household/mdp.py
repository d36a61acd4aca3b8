"""A small household text MDP whose true advantages are known exactly.

It is the testbed of ``benchmarks/credit_assignment.py`` (through :mod:`envs.household.rollouts`):
an ALFWorld-like world small enough for dynamic programming, rendered as text with a tunable amount
of lexical noise.

World (:class:`HouseTask`)
    ``n_rooms`` rooms joined by doors (a random spanning tree plus one random door, which may
    coincide with a tree door), two or three pieces of furniture and one or two loose items per
    room. The task is "put the <target> in/on the <receptacle>", optionally after processing the
    target with an appliance that stands in some room ("heat ... with the microwave", "cool ...
    with the fridge", "clean ... with the sinkbasin"), like ALFWorld's pick/heat/cool/clean task
    types.

Latent state (:class:`Latent`)
    ``(room, held)`` with ``held`` 0 = hands empty, 1 = carrying the target, 2 = carrying the
    processed target (tasks with an appliance only), plus one absorbing success state. Transitions
    are deterministic. Admissible commands in a state: ``go to the <room>`` for each door, ``take``
    the target where it lies, ``<process>`` at the appliance, ``put`` at the receptacle when the
    target is ready, ``examine the <furniture>`` for each piece of furniture and ``look`` (the last
    two change nothing). ``put`` pays reward 1 and ends the episode (success); an episode that has
    not succeeded after ``horizon`` steps is truncated and fails. Rewards are sparse and binary, as
    in ALFWorld.

Rollout policy
    Epsilon-greedy around the shortest-path policy: probability ``1 - epsilon`` spread uniformly
    over the optimal commands (those that shorten the distance to success by one), ``epsilon``
    spread uniformly over all admissible commands. Every task carries its own ``epsilon``, so tasks
    differ in difficulty and task groups differ in success rate.

Exact values (:meth:`HouseMDP.exact_values`)
    For the discounted return-to-go ``R_t = sum_{k>=t} gamma^(k-t) r_k`` of an episode with
    ``horizon`` steps, finite-horizon backward induction over (time, latent state) gives
    ``V_t(s) = sum_a pi(a|s) Q_t(s, a)`` and ``Q_t(s, a) = r(s, a) + gamma V_{t+1}(s')`` with
    ``V_horizon = 0`` and ``V = 0`` in the success state. The true advantage of a visited step is
    ``A_t = Q_t(s_t, a_t) - V_t(s_t)``; ``E[R_t | s_t, a_t] = Q_t(s_t, a_t)``.

Text (:func:`render_episode`)
    The observation ``s_t`` is what the agent reads before acting at step ``t``, e.g.
    ``"You are in the kitchen. Looking around, you see a table 1, a fridge 1 and a mug 1. You are
    carrying nothing."`` It always states the room, the visible furniture and items and what is
    carried, so at ``noise = 0`` the text is a one-to-one function of the latent state. Lexical
    noise ``noise`` in [0, 1] is the probability of each surface perturbation, drawn
    independently:

    - per episode and entity: an instance number drawn from 2..9 instead of 1 (ALFWorld numbers its
      objects per game; scikit-learn's default tokenizer drops one-character tokens, so the number
      changes the exact text but not the TF-IDF vector);
    - per observation: an alternative phrasing of the room and listing sentences, a shuffled
      listing order, an echo of the previous command's feedback ("You arrive at the kitchen.") in
      front, and one distractor sentence ("A clock ticks somewhere.").

    At ``noise = 1`` nearly every observation is unique text while its content words still name
    the latent state; at ``noise = 0`` identical latent states read identically.

Randomness: task sampling, policy sampling and rendering each take a ``numpy.random.Generator``,
so the same trajectories can be rendered at several noise levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

ROOM_NAMES = (
    "kitchen",
    "living room",
    "bedroom",
    "bathroom",
    "hallway",
    "garage",
    "office",
    "pantry",
    "laundry room",
    "dining room",
)
FURNITURE_NAMES = (
    "table",
    "shelf",
    "cabinet",
    "drawer",
    "desk",
    "sofa",
    "bed",
    "countertop",
    "armchair",
    "dresser",
    "safe",
    "sidetable",
    "bookcase",
    "coffeetable",
    "stool",
    "chest",
)
ITEM_NAMES = (
    "apple",
    "mug",
    "book",
    "key",
    "pen",
    "towel",
    "candle",
    "bowl",
    "remote",
    "vase",
    "plate",
    "spoon",
    "watch",
    "pillow",
    "cup",
    "newspaper",
    "bottle",
    "soap",
    "phone",
    "glass",
)
# process name -> (appliance, adjective of the processed target)
PROCESSES = {"heat": ("microwave", "hot"), "cool": ("fridge", "cool"), "clean": ("sinkbasin", "clean")}

LOCATION_PHRASES = ("You are in the {}.", "You are standing in the {}.", "This is the {}.")
LISTING_PHRASES = ("Looking around, you see {}.", "You notice {}.", "Around you are {}.")
DISTRACTOR_SENTENCES = (
    "A clock ticks somewhere.",
    "Sunlight falls through the window.",
    "The floor creaks under your feet.",
    "It is quiet here.",
    "You hear a dog barking outside.",
    "The air smells of coffee.",
    "A draft moves the curtains.",
    "The lights hum softly.",
    "Rain taps on the roof.",
    "Somewhere a door closes.",
)

EMPTY, CARRYING, PROCESSED = 0, 1, 2


class Latent(NamedTuple):
    """A non-terminal latent state: the agent's room index and what it holds (0, 1 or 2)."""

    room: int
    held: int


@dataclass(frozen=True)
class HouseTask:
    """One household task: layout, goal and the difficulty of its rollout policy.

    ``furniture[r]`` and ``items[r]`` list what stands and lies in room ``r`` (the appliance, if
    any, is among its room's furniture; the target is among ``items[target_room]``).
    """

    rooms: tuple[str, ...]
    doors: tuple[tuple[int, ...], ...]
    furniture: tuple[tuple[str, ...], ...]
    items: tuple[tuple[str, ...], ...]
    target: str
    target_room: int
    receptacle: str
    goal_room: int
    process: str | None
    appliance_room: int | None
    start_room: int
    epsilon: float

    def __post_init__(self) -> None:
        n_rooms = len(self.rooms)
        if not n_rooms or not len(self.doors) == len(self.furniture) == len(self.items) == n_rooms:
            raise ValueError("rooms, doors, furniture and items must be non-empty and list the same rooms")
        if len(set(self.rooms)) != n_rooms or not set(self.rooms) <= set(ROOM_NAMES):
            raise ValueError(f"rooms must be distinct names from ROOM_NAMES, got {self.rooms}")
        for room, others in enumerate(self.doors):
            for other in others:
                if not 0 <= other < n_rooms or other == room or room not in self.doors[other]:
                    raise ValueError(f"doors of room {room} ({others}) must name other rooms, both ways")
        for name, room in (
            ("target_room", self.target_room),
            ("goal_room", self.goal_room),
            ("start_room", self.start_room),
        ):
            if not 0 <= room < n_rooms:
                raise ValueError(f"{name} must index one of {n_rooms} rooms, got {room}")
        if self.target not in self.items[self.target_room]:
            raise ValueError(f"target {self.target!r} is not among the items of room {self.target_room}")
        if self.receptacle not in self.furniture[self.goal_room]:
            raise ValueError(f"receptacle {self.receptacle!r} is not furniture of room {self.goal_room}")
        if self.process is not None:
            if self.process not in PROCESSES:
                raise ValueError(f"process must be None or one of {sorted(PROCESSES)}, got {self.process!r}")
            if self.appliance_room is None or not 0 <= self.appliance_room < n_rooms:
                raise ValueError(f"a {self.process} task needs an appliance_room index, got {self.appliance_room}")
            if self.appliance not in self.furniture[self.appliance_room]:
                raise ValueError(f"the {self.appliance} must be furniture of room {self.appliance_room}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    @property
    def appliance(self) -> str | None:
        """The appliance the target must be processed with, or ``None`` for a plain put task."""
        return None if self.process is None else PROCESSES[self.process][0]

    @property
    def description(self) -> str:
        """The task sentence, e.g. ``"heat some mug and put it in/on the shelf"``."""
        if self.process is None:
            return f"put some {self.target} in/on the {self.receptacle}"
        return f"{self.process} some {self.target} and put it in/on the {self.receptacle}"


class Command(NamedTuple):
    """One admissible command of a latent state and its deterministic effect.

    ``text`` and ``feedback`` are format strings whose ``{}`` fields are filled with the labels of
    ``entities`` (``"mug 3"``); ``next_state`` indexes :attr:`HouseMDP.states` or is
    :attr:`HouseMDP.success_state`.
    """

    text: str
    feedback: str
    entities: tuple[str, ...]
    next_state: int
    reward: float


@dataclass(frozen=True)
class Episode:
    """One rollout: latent state indices, chosen command indices and rewards, each of shape (T,).

    ``actions[t]`` indexes ``HouseMDP.commands[states[t]]``; ``T <= horizon``.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    @property
    def success(self) -> bool:
        """Whether the episode ended with the rewarded ``put``."""
        return bool(self.rewards.size and self.rewards[-1] > 0.0)

    def returns_to_go(self, gamma: float) -> np.ndarray:
        """Discounted returns ``R_t = sum_{k>=t} gamma^(k-t) r_k``, shape (T,)."""
        returns = np.zeros(self.rewards.size)
        running = 0.0
        for t in range(self.rewards.size - 1, -1, -1):
            running = self.rewards[t] + gamma * running
            returns[t] = running
        return returns


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample_task(rng: np.random.Generator, n_rooms: int = 6, epsilon: float = 0.3) -> HouseTask:
    """Draw a random house and task; half of the tasks need an appliance.

    Args:
        rng: source of randomness.
        n_rooms: number of rooms, 3 to ``len(ROOM_NAMES)``.
        epsilon: exploration probability of the task's rollout policy, in [0, 1].
    """
    if not 3 <= n_rooms <= len(ROOM_NAMES):
        raise ValueError(f"n_rooms must be in [3, {len(ROOM_NAMES)}], got {n_rooms}")
    rooms = tuple(str(name) for name in rng.choice(ROOM_NAMES, size=n_rooms, replace=False))
    neighbours: list[set[int]] = [set() for _ in range(n_rooms)]
    for room in range(1, n_rooms):
        other = int(rng.integers(room))
        neighbours[room].add(other)
        neighbours[other].add(room)
    first, second = (int(r) for r in rng.choice(n_rooms, size=2, replace=False))
    neighbours[first].add(second)
    neighbours[second].add(first)

    furniture = [
        [str(f) for f in rng.choice(FURNITURE_NAMES, size=int(rng.integers(2, 4)), replace=False)]
        for _ in range(n_rooms)
    ]
    item_counts = rng.integers(1, 3, size=n_rooms)
    item_pool = [str(i) for i in rng.choice(ITEM_NAMES, size=int(item_counts.sum()), replace=False)]
    bounds = np.concatenate([[0], np.cumsum(item_counts)])
    items = [item_pool[bounds[r] : bounds[r + 1]] for r in range(n_rooms)]

    target_room, goal_room = (int(r) for r in rng.choice(n_rooms, size=2, replace=False))
    target = str(rng.choice(items[target_room]))
    receptacle = str(rng.choice(furniture[goal_room]))
    process: str | None = None
    appliance_room: int | None = None
    if rng.random() < 0.5:
        process = str(rng.choice(sorted(PROCESSES)))
        appliance_room = int(rng.integers(n_rooms))
        furniture[appliance_room].append(PROCESSES[process][0])
    return HouseTask(
        rooms=rooms,
        doors=tuple(tuple(sorted(n)) for n in neighbours),
        furniture=tuple(tuple(f) for f in furniture),
        items=tuple(tuple(i) for i in items),
        target=target,
        target_room=target_room,
        receptacle=receptacle,
        goal_room=goal_room,
        process=process,
        appliance_room=appliance_room,
        start_room=int(rng.integers(n_rooms)),
        epsilon=float(epsilon),
    )


@dataclass(frozen=True)
class ExactValues:
    """Finite-horizon values of the rollout policy.

    Attributes:
        v: (horizon + 1, S + 1) array, ``v[t, s]`` = V_t(s); row ``horizon`` and column
            ``S`` (the success state) are zero.
        q: (horizon, S, C) array, ``q[t, s, a]`` = Q_t(s, a); NaN where state ``s`` has fewer
            than ``a + 1`` commands.
    """

    v: np.ndarray
    q: np.ndarray

    def advantages(self, episode: Episode) -> np.ndarray:
        """True advantages ``Q_t(s_t, a_t) - V_t(s_t)`` of an episode's steps, shape (T,)."""
        steps = np.arange(episode.states.size)
        return self.q[steps, episode.states, episode.actions] - self.v[steps, episode.states]


class HouseMDP:
    """The finite latent MDP of a :class:`HouseTask` and its epsilon-greedy rollout policy.

    Attributes:
        task: the task it was built from.
        states: the S non-terminal latent states; index S (:attr:`success_state`) is the absorbing
            success state.
        start_state: index of the task's initial state.
        commands: ``commands[s]`` lists the admissible commands of state ``s`` in a fixed order.
        distance: (S + 1,) ints, the fewest commands from each state to success.
        policy: (S, C) probabilities of the rollout policy over each state's commands,
            zero-padded to ``C``, the largest number of commands of any state.
    """

    def __init__(self, task: HouseTask) -> None:
        self.task = task
        self._ready = CARRYING if task.process is None else PROCESSED
        self.states = [Latent(room, held) for room in range(len(task.rooms)) for held in range(self._ready + 1)]
        self._index = {state: i for i, state in enumerate(self.states)}
        self.success_state = len(self.states)
        self.start_state = self._index[Latent(task.start_room, EMPTY)]
        self.commands = [self._admissible(state) for state in self.states]

        width = max(len(commands) for commands in self.commands)
        self._n_commands = np.array([len(commands) for commands in self.commands])
        self._next = np.full((len(self.states), width), self.success_state)
        self._reward = np.zeros((len(self.states), width))
        for s, commands in enumerate(self.commands):
            for a, command in enumerate(commands):
                self._next[s, a] = command.next_state
                self._reward[s, a] = command.reward
        self.distance = self._distances()
        self.policy = self._epsilon_greedy()

    def _admissible(self, state: Latent) -> list[Command]:
        task, room, held = self.task, state.room, state.held
        commands = [
            Command(
                "go to the {}", "You arrive at the {}.", (task.rooms[other],), self._index[Latent(other, held)], 0.0
            )
            for other in task.doors[room]
        ]
        if room == task.target_room and held == EMPTY:
            support = task.furniture[room][0]
            commands.append(
                Command(
                    "take the {} from the {}",
                    "You pick up the {} from the {}.",
                    (task.target, support),
                    self._index[Latent(room, CARRYING)],
                    0.0,
                )
            )
        if task.process is not None and room == task.appliance_room and held == CARRYING:
            commands.append(
                Command(
                    f"{task.process} the {{}} with the {{}}",
                    f"You {task.process} the {{}} using the {{}}.",
                    (task.target, task.appliance),
                    self._index[Latent(room, PROCESSED)],
                    0.0,
                )
            )
        if room == task.goal_room and held == self._ready:
            commands.append(
                Command(
                    "put the {} in/on the {}",
                    "You put the {} in/on the {}.",
                    (task.target, task.receptacle),
                    self.success_state,
                    1.0,
                )
            )
        commands.extend(
            Command("examine the {}", "You look closely at the {}. Nothing special.", (piece,), self._index[state], 0.0)
            for piece in task.furniture[room]
        )
        commands.append(Command("look", "You look around.", (), self._index[state], 0.0))
        return commands

    def _distances(self) -> np.ndarray:
        unreachable = len(self.states) + 1
        distance = np.full(len(self.states) + 1, unreachable)
        distance[self.success_state] = 0
        changed = True
        while changed:
            changed = False
            for s, commands in enumerate(self.commands):
                best = 1 + min(distance[command.next_state] for command in commands)
                if best < distance[s]:
                    distance[s] = best
                    changed = True
        if (distance == unreachable).any():
            raise ValueError(f"task {self.task.description!r} has states that cannot reach success")
        return distance

    def _epsilon_greedy(self) -> np.ndarray:
        epsilon = self.task.epsilon
        policy = np.zeros(self._next.shape)
        for s, commands in enumerate(self.commands):
            optimal = [
                a for a, command in enumerate(commands) if self.distance[command.next_state] == self.distance[s] - 1
            ]
            policy[s, : len(commands)] = epsilon / len(commands)
            policy[s, optimal] += (1.0 - epsilon) / len(optimal)
        return policy

    def exact_values(self, horizon: int, gamma: float) -> ExactValues:
        """V and Q of the rollout policy by backward induction over ``horizon`` steps."""
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        n_states = len(self.states)
        v = np.zeros((horizon + 1, n_states + 1))
        q = np.full((horizon, *self._next.shape), np.nan)
        valid = np.arange(self._next.shape[1]) < self._n_commands[:, None]
        for t in range(horizon - 1, -1, -1):
            q_t = self._reward + gamma * v[t + 1][self._next]
            q[t][valid] = q_t[valid]
            v[t, :n_states] = (self.policy * np.where(valid, q_t, 0.0)).sum(axis=1)
        return ExactValues(v=v, q=q)

    def sample_episodes(
        self, n_episodes: int, horizon: int, rng: np.random.Generator, start_state: int | None = None
    ) -> list[Episode]:
        """Roll out the policy ``n_episodes`` times for at most ``horizon`` steps.

        Args:
            n_episodes: number of episodes, >= 1.
            horizon: step limit H; an episode without success has exactly H steps.
            rng: source of the policy's randomness.
            start_state: latent state index to start from (default: the task's start state).
        """
        if n_episodes < 1:
            raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        start = self.start_state if start_state is None else start_state
        if not 0 <= start < len(self.states):
            raise ValueError(f"start_state must index one of {len(self.states)} states, got {start}")
        cumulative = np.cumsum(self.policy, axis=1)
        state = np.full(n_episodes, start)
        states = np.zeros((n_episodes, horizon), dtype=np.int64)
        actions = np.zeros((n_episodes, horizon), dtype=np.int64)
        rewards = np.zeros((n_episodes, horizon))
        lengths = np.zeros(n_episodes, dtype=np.int64)
        for t in range(horizon):
            live = np.flatnonzero(state != self.success_state)
            if live.size == 0:
                break
            s = state[live]
            draws = rng.random(live.size)
            a = np.minimum((cumulative[s] < draws[:, None]).sum(axis=1), self._n_commands[s] - 1)
            states[live, t] = s
            actions[live, t] = a
            rewards[live, t] = self._reward[s, a]
            lengths[live] += 1
            state[live] = self._next[s, a]
        return [Episode(states[i, :n], actions[i, :n], rewards[i, :n]) for i, n in enumerate(lengths)]


class EpisodeRenderer:
    """The texts of one episode of ``mdp``'s task at lexical noise ``noise`` (see the module docstring).

    The per-episode instance numbers are drawn from ``rng`` on construction, each observation's
    perturbations when it is rendered.
    """

    def __init__(self, mdp: HouseMDP, noise: float, rng: np.random.Generator) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.mdp, self.noise, self.rng = mdp, noise, rng
        task = mdp.task
        entities = sorted({name for room in (*task.furniture, *task.items) for name in room})
        self.numbers = {entity: int(rng.integers(2, 10)) if rng.random() < noise else 1 for entity in entities}

    def observation(self, state: int, feedback: str | None) -> str:
        """The observation of non-terminal latent state ``state`` after the previous command's ``feedback``."""
        return _render_observation(self.mdp.task, self.mdp.states[state], feedback, self.numbers, self.noise, self.rng)

    def command(self, command: Command) -> tuple[str, str]:
        """``(text, feedback)`` of a command with this episode's labels, e.g. ``("take the mug 3 from ...", ...)``."""
        labels = [_label(entity, self.numbers) for entity in command.entities]
        return command.text.format(*labels), command.feedback.format(*labels)


def render_episode(mdp: HouseMDP, episode: Episode, noise: float, rng: np.random.Generator) -> list[str]:
    """Observation texts ``s_t`` of an episode's steps, one per step, with lexical noise ``noise``.

    See the module docstring for the perturbations; ``noise`` is each one's probability.
    """
    renderer = EpisodeRenderer(mdp, noise, rng)
    texts, feedback = [], None
    for s, a in zip(episode.states, episode.actions):
        texts.append(renderer.observation(s, feedback))
        feedback = renderer.command(mdp.commands[s][a])[1]
    return texts


def _label(entity: str, numbers: dict[str, int]) -> str:
    """``"mug 3"`` for an object, the bare name for a room."""
    return entity if entity in ROOM_NAMES else f"{entity} {numbers[entity]}"


def _render_observation(
    task: HouseTask,
    state: Latent,
    feedback: str | None,
    numbers: dict[str, int],
    noise: float,
    rng: np.random.Generator,
) -> str:
    room, held = state
    location = LOCATION_PHRASES[_variant(len(LOCATION_PHRASES), noise, rng)].format(task.rooms[room])
    items = [item for item in task.items[room] if held == EMPTY or item != task.target]
    visible = [*task.furniture[room], *items]
    listed = [f"{_article(entity)} {_label(entity, numbers)}" for entity in visible]
    if rng.random() < noise:
        rng.shuffle(listed)
    listing = LISTING_PHRASES[_variant(len(LISTING_PHRASES), noise, rng)].format(_join(listed))
    target = _label(task.target, numbers)
    if held == EMPTY:
        carrying = "You are carrying nothing."
    elif held == CARRYING:
        carrying = f"You are carrying the {target}."
    else:
        carrying = f"You are carrying the {PROCESSES[task.process][1]} {target}."
    sentences = [location, listing, carrying]
    if rng.random() < noise:
        distractor = DISTRACTOR_SENTENCES[int(rng.integers(len(DISTRACTOR_SENTENCES)))]
        sentences.insert(int(rng.integers(len(sentences) + 1)), distractor)
    if feedback is not None and rng.random() < noise:
        sentences.insert(0, feedback)
    return " ".join(sentences)


def _variant(n_variants: int, noise: float, rng: np.random.Generator) -> int:
    """Index of a phrasing: 0 (the canonical one) unless a perturbation is drawn with ``noise``."""
    return int(rng.integers(n_variants)) if rng.random() < noise else 0
