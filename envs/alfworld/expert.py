"""A deterministic expert for ALFWorld's six task types, planned from the game state.

:class:`World` is the part of a game state the tasks depend on (where the agent
is, what is in which receptacle, what is held, open, clean, hot, cool or
switched on), read from the engine's PDDL facts with the names the engine
prints. :class:`ExpertPolicy` maps a world to the next command of a shortest
sensible route to the goal: fetch the closest object of the target type (fewer
moves, already-open receptacles first), change its state at the sink,
microwave or fridge when the task needs it, then bring it to the target
receptacle, or to a lamp for ``look``; anything else in hand is put down first.
Ties are broken by name, so the expert never draws a random number.

The same policy gives a game's walkthrough (:meth:`ExpertPolicy.plan`, rolled
out on the symbolic world) and the environment's ``expert_action`` (one call on
the engine's current state, so it recovers from any detour the agent took).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envs.alfworld.tasks import LAMP_HOLDERS, STATE_CHANGERS, TaskSpec

_TYPE_SUFFIX = "type"
_STATE_OF_VERB = {change.verb: change.state for change in STATE_CHANGERS.values()}
_OPPOSITE_STATES = {"hot": "cool", "cool": "hot"}
_NUMBERED_NAME = re.compile(r"^(.*?)\s*(\d+)$")
_LAMP_HOLDER_TYPES = frozenset(kind.lower() for kind in LAMP_HOLDERS)


def natural_key(name: str) -> tuple[str, int]:
    """Sort key putting ``"cabinet 2"`` before ``"cabinet 10"``."""
    match = _NUMBERED_NAME.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def _type_key(pddl_type_name: str) -> str:
    """``"sinkbasintype"`` or ``"SinkBasin"`` -> ``"sinkbasin"``."""
    name = pddl_type_name.lower()
    return name[: -len(_TYPE_SUFFIX)] if name.endswith(_TYPE_SUFFIX) else name


@dataclass(frozen=True)
class Command:
    """One expert command and what it does to the world.

    Attributes:
        text: The ALFWorld command, e.g. ``"take mug 1 from cabinet 2"``.
        verb: ``"go"``, ``"open"``, ``"take"``, ``"move"``, ``"use"``,
            ``"clean"``, ``"heat"`` or ``"cool"``.
        subject: PDDL id of the receptacle (go, open) or object (the others).
        receptacle: PDDL id of the receptacle the action uses, if any.
    """

    text: str
    verb: str
    subject: str
    receptacle: str = ""


@dataclass
class World:
    """The task-relevant state of a game, keyed by PDDL ids.

    Types are lower-case ALFRED type names without the ``Type`` suffix
    (``"sinkbasin"``); ``names`` maps ids to the names the engine prints.
    """

    agent_location: str
    receptacle_location: dict[str, str]
    receptacle_type: dict[str, str]
    object_type: dict[str, str]
    inside: dict[str, str]
    openable: set[str]
    opened: set[str]
    held: str | None
    states: dict[str, set[str]]
    switched_on: set[str]
    can_contain: set[tuple[str, str]]
    names: dict[str, str]

    @classmethod
    def from_facts(cls, facts: Iterable[Any], names: Mapping[str, str]) -> World:
        """World of a TextWorld PDDL game state.

        Args:
            facts: ``state["_facts"]``: propositions over PDDL ids.
            names: PDDL id -> printed name (from ``state["_entity_infos"]``).

        Raises:
            ValueError: when the facts do not place the agent.
        """
        world = cls(
            agent_location="",
            receptacle_location={},
            receptacle_type={},
            object_type={},
            inside={},
            openable=set(),
            opened=set(),
            held=None,
            states={change.state: set() for change in STATE_CHANGERS.values()},
            switched_on=set(),
            can_contain=set(),
            names=dict(names),
        )
        for fact in facts:
            args = [variable.name for variable in fact.arguments]
            match fact.name:
                case "atlocation":
                    world.agent_location = args[1]
                case "receptacleatlocation":
                    world.receptacle_location[args[0]] = args[1]
                case "receptacletype":
                    world.receptacle_type[args[0]] = _type_key(args[1])
                case "objecttype":
                    world.object_type[args[0]] = _type_key(args[1])
                case "inreceptacle":
                    world.inside[args[0]] = args[1]
                case "openable":
                    world.openable.add(args[0])
                case "opened":
                    world.opened.add(args[0])
                case "holds":
                    world.held = args[1]
                case "isclean":
                    world.states["clean"].add(args[0])
                case "ishot":
                    world.states["hot"].add(args[0])
                case "iscool":
                    world.states["cool"].add(args[0])
                case "istoggled":
                    world.switched_on.add(args[0])
                case "cancontain":
                    world.can_contain.add((_type_key(args[0]), _type_key(args[1])))
        if not world.agent_location:
            raise ValueError("the game state has no atlocation fact for the agent")
        return world

    @classmethod
    def from_game_state(cls, state: Mapping[str, Any]) -> World:
        """World of a TextWorld game state holding ``"_facts"`` and ``"_entity_infos"``."""
        names = {key: info.name or info.id for key, info in state["_entity_infos"].items()}
        return cls.from_facts(state["_facts"], names)

    def name(self, entity: str) -> str:
        """Printed name of a PDDL id."""
        return self.names.get(entity, entity)

    def receptacles_of(self, receptacle_type: str) -> list[str]:
        """Receptacles of a type (lower-case ALFRED name), in name order."""
        found = [r for r, kind in self.receptacle_type.items() if kind == receptacle_type]
        return sorted(found, key=lambda r: natural_key(self.name(r)))

    def objects_of(self, object_type: str) -> list[str]:
        """Objects of a type (lower-case ALFRED name), in name order."""
        found = [o for o, kind in self.object_type.items() if kind == object_type]
        return sorted(found, key=lambda o: natural_key(self.name(o)))

    def at(self, receptacle: str) -> bool:
        """Whether the agent stands at the receptacle's location."""
        return self.receptacle_location.get(receptacle) == self.agent_location

    def is_closed(self, receptacle: str) -> bool:
        """Whether the receptacle must be opened before use."""
        return receptacle in self.openable and receptacle not in self.opened

    def open_here(self) -> list[str]:
        """The receptacles at the agent's location whose contents show (not closed)."""
        return [
            r
            for r, location in self.receptacle_location.items()
            if location == self.agent_location and not self.is_closed(r)
        ]

    def apply(self, command: Command) -> None:
        """Apply the effect of an expert command, as the ALFWorld domain defines it."""
        if command.verb == "go":
            self.agent_location = self.receptacle_location[command.subject]
        elif command.verb == "open":
            self.opened.add(command.subject)
        elif command.verb == "take":
            del self.inside[command.subject]
            self.held = command.subject
        elif command.verb == "move":
            self.inside[command.subject] = command.receptacle
            self.held = None
        elif command.verb == "use":
            self.switched_on.add(command.subject)
        elif command.verb in _STATE_OF_VERB:
            state = _STATE_OF_VERB[command.verb]
            self.states[state].add(command.subject)
            # Heating and cooling undo each other (HeatObject / CoolObject effects).
            if state in _OPPOSITE_STATES:
                self.states[_OPPOSITE_STATES[state]].discard(command.subject)
        else:
            raise ValueError(f"unknown expert verb {command.verb!r}")


class ExpertPolicy:
    """Next-command policy for one task.

    Args:
        task: What the game asks for.
    """

    def __init__(self, task: TaskSpec) -> None:
        self.task = task
        self._object = task.object_target.lower()
        self._parent = task.parent_target.lower()
        self._lamp = task.toggle_target.lower()
        change = STATE_CHANGERS.get(task.task_type)
        self._changer_type = change.receptacle_type.lower() if change else ""
        self._changer_verb = change.verb if change else ""
        self._needed_state = change.state if change else ""

    def is_won(self, world: World) -> bool:
        """Whether the world satisfies the task's goal (mirrors ALFRED's goal library)."""
        if self.task.task_type == "look":
            return (
                world.held is not None
                and world.object_type.get(world.held) == self._object
                and any(
                    lamp in world.switched_on and lamp in world.inside and world.at(world.inside[lamp])
                    for lamp in world.objects_of(self._lamp)
                )
            )
        needed = 2 if self.task.task_type == "pick2" else 1
        return any(self._placed_count(world, receptacle) >= needed for receptacle in world.receptacles_of(self._parent))

    def observe(self, world: World) -> None:
        """Take note of a state the agent reached (this expert sees the whole state anyway: nothing to note)."""

    def next_command(self, world: World) -> Command | None:
        """The expert's next command, or ``None`` when the goal holds or cannot be reached."""
        if self.is_won(world):
            return None
        if world.held is not None:
            if world.object_type.get(world.held) == self._object:
                return self._advance(world, world.held)
            return self._put_down(world, world.held)
        return self._fetch(world)

    def plan(self, world: World, max_steps: int = 100) -> list[Command] | None:
        """Commands from ``world`` to the goal (rolled out on a copy), or ``None`` if none is found."""
        world = copy.deepcopy(world)
        commands: list[Command] = []
        while not self.is_won(world):
            command = self.next_command(world)
            if command is None or len(commands) >= max_steps:
                return None
            world.apply(command)
            commands.append(command)
        return commands

    def _placed_count(self, world: World, receptacle: str) -> int:
        return sum(
            1
            for obj, holder in world.inside.items()
            if holder == receptacle
            and world.object_type.get(obj) == self._object
            and (not self._needed_state or obj in world.states[self._needed_state])
        )

    def _go(self, world: World, receptacle: str) -> Command:
        return Command(f"go to {world.name(receptacle)}", "go", receptacle)

    def _reach(self, world: World, receptacle: str) -> Command | None:
        """Go to and open ``receptacle`` if needed; ``None`` once it is usable."""
        if not world.at(receptacle):
            return self._go(world, receptacle)
        if world.is_closed(receptacle):
            return Command(f"open {world.name(receptacle)}", "open", receptacle)
        return None

    def _place(self, world: World, obj: str, receptacle: str) -> Command:
        return self._reach(world, receptacle) or Command(
            f"move {world.name(obj)} to {world.name(receptacle)}", "move", obj, receptacle
        )

    def _target_receptacle(self, world: World) -> str | None:
        """Where the object goes: the receptacle of the parent type already holding most, then open ones."""
        candidates = world.receptacles_of(self._parent)
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda r: (-self._placed_count(world, r), r in world.openable, natural_key(world.name(r))),
        )

    def _advance(self, world: World, obj: str) -> Command | None:
        """Next step with a target object in hand."""
        if self._needed_state and obj not in world.states[self._needed_state]:
            changers = world.receptacles_of(self._changer_type)
            if not changers:
                return None
            changer = changers[0]
            if not world.at(changer):
                return self._go(world, changer)
            return Command(
                f"{self._changer_verb} {world.name(obj)} with {world.name(changer)}", self._changer_verb, obj, changer
            )
        if self.task.task_type == "look":
            lamps = [lamp for lamp in world.objects_of(self._lamp) if lamp in world.inside]
            if not lamps:
                return None
            lamp = min(lamps, key=lambda candidate: (not world.at(world.inside[candidate]),))
            if not world.at(world.inside[lamp]):
                return self._go(world, world.inside[lamp])
            return Command(f"use {world.name(lamp)}", "use", lamp, world.inside[lamp])
        target = self._target_receptacle(world)
        return None if target is None else self._place(world, obj, target)

    def _put_down(self, world: World, obj: str) -> Command | None:
        """Next step to free the hands of an object the task does not need."""
        kind = world.object_type.get(obj, "")
        holders = [r for r, rtype in world.receptacle_type.items() if (rtype, kind) in world.can_contain]
        if not holders:
            return None
        holder = min(holders, key=lambda r: (not world.at(r), world.is_closed(r), natural_key(world.name(r))))
        return self._place(world, obj, holder)

    def _fetch(self, world: World) -> Command | None:
        """Next step to pick up the cheapest object of the target type."""
        target = self._target_receptacle(world) if self.task.task_type == "pick2" else None
        candidates = [
            obj for obj in world.objects_of(self._object) if obj in world.inside and world.inside[obj] != target
        ]
        if not candidates:
            return None

        def cost(obj: str) -> tuple[int, tuple[str, int]]:
            holder = world.inside[obj]
            return (not world.at(holder)) + world.is_closed(holder), natural_key(world.name(obj))

        obj = min(candidates, key=cost)
        holder = world.inside[obj]
        return self._reach(world, holder) or Command(
            f"take {world.name(obj)} from {world.name(holder)}", "take", obj, holder
        )


class SearchingExpert(ExpertPolicy):
    """The expert restricted to what the agent has seen: it searches instead of knowing where things are.

    :class:`ExpertPolicy` plans from the whole game state, so its first command already walks to
    the receptacle hiding the target object: a policy that only sees the text cannot infer that
    move in a room it has not explored, and imitating it teaches the training rooms' layouts
    rather than a way to solve a new one. This expert knows the contents of a receptacle only
    once the agent has stood at it while it was open (:meth:`observe`); objects elsewhere are
    hidden from the plan. While what the task needs (its object, then for ``look`` a lamp) has
    not been seen, it searches: the unexplored receptacles that can hold the missing type
    (ALFRED's ``cancontain`` facts, :data:`~envs.alfworld.tasks.LAMP_HOLDERS` for a lamp; for
    the object not the target receptacle's type, where games never start it), in name order,
    each opened if closed.
    A sweep in name order makes the next place to look a function of the task, the room's
    receptacles and where the agent stands, all of which the prompt shows.

    Call :meth:`observe` with every state the agent reaches (reset and each step), then
    :meth:`next_command`.
    """

    def __init__(self, task: TaskSpec) -> None:
        super().__init__(task)
        #: Receptacles whose contents the agent has seen.
        self.explored: set[str] = set()

    def observe(self, world: World) -> None:
        """Record the receptacle the agent stands at as explored when its contents show (it is open)."""
        self.explored.update(world.open_here())

    def next_command(self, world: World) -> Command | None:
        """The expert's command on the part of ``world`` seen so far, else the next step of the search."""
        if self.is_won(world):
            return None
        seen = copy.copy(world)
        seen.inside = {obj: holder for obj, holder in world.inside.items() if self._visible(world, holder)}
        return super().next_command(seen) or self._search(world)

    def _visible(self, world: World, holder: str) -> bool:
        """Whether what ``holder`` holds has been seen (a lamp's holder may itself be an object)."""
        return holder in self.explored or (holder in world.inside and self._visible(world, world.inside[holder]))

    def _missing_type(self, world: World) -> str:
        """The object type the task needs next and has not seen."""
        holds_target = world.held is not None and world.object_type.get(world.held) == self._object
        return self._lamp if holds_target and self._lamp else self._object

    def _search(self, world: World) -> Command | None:
        """Go to (and open) the first unexplored receptacle that can hold the missing type."""
        missing = self._missing_type(world)
        if missing == self._object:
            holds = {kind for kind, held in world.can_contain if held == missing} - {self._parent}
        else:
            holds = _LAMP_HOLDER_TYPES
        candidates = [r for r, kind in world.receptacle_type.items() if r not in self.explored and kind in holds]
        if not candidates:
            return None
        return self._reach(world, min(candidates, key=lambda r: natural_key(world.name(r))))
