"""ALFWorld's six task types and their goals, from ``alfworld.gen.goal_library``.

A task is the ALFRED ``pddl_params`` of a game (``object_target``,
``parent_target``, ``toggle_target``, ...): :class:`TaskSpec` holds them, renders
the PDDL goal with ALFRED's goal library and the goal sentence with the
library's templates, and reads them back from a ``traj_data.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import alfworld.gen.goal_library as goal_library

from envs import ALFWORLD_TASK_TYPES

#: Short task-type names (the paper's Table 1 columns) -> ALFRED task types.
TASK_TYPES: dict[str, str] = dict(
    zip(
        ALFWORLD_TASK_TYPES,
        (
            "pick_and_place_simple",
            "look_at_obj_in_light",
            "pick_clean_then_place_in_recep",
            "pick_heat_then_place_in_recep",
            "pick_cool_then_place_in_recep",
            "pick_two_obj_and_place",
        ),
        strict=True,
    )
)
#: ALFRED task types -> short names.
SHORT_NAMES: dict[str, str] = {alfred: short for short, alfred in TASK_TYPES.items()}
#: Furniture a lamp stands on in generated games (ALFRED type names; the PDDL has no ``cancontain`` for lamps).
LAMP_HOLDERS = frozenset(
    {"Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "DiningTable", "TVStand", "CounterTop"}
)


class StateChange(NamedTuple):
    """How an object gets the state a task asks for.

    Attributes:
        receptacle_type: ALFRED type of the receptacle the action needs, e.g. ``"Microwave"``.
        verb: The command's verb, e.g. ``"heat"`` (``"heat mug 1 with microwave 1"``).
        state: The object state it sets, as the PDDL predicate suffix: ``"clean"``, ``"hot"``, ``"cool"``.
    """

    receptacle_type: str
    verb: str
    state: str


#: Task types that need a state change, and how it is made.
STATE_CHANGERS: dict[str, StateChange] = {
    "clean": StateChange("SinkBasin", "clean", "clean"),
    "heat": StateChange("Microwave", "heat", "hot"),
    "cool": StateChange("Fridge", "cool", "cool"),
}


def validate_task_types(task_types: Iterable[str] | None) -> tuple[str, ...]:
    """Short task-type names in canonical order; all six for ``None``.

    Raises:
        ValueError: for an empty selection or a name that is not a task type.
    """
    if task_types is None:
        return tuple(TASK_TYPES)
    if isinstance(task_types, str):
        task_types = [task_types]
    requested = list(task_types)
    unknown = sorted({str(name) for name in requested} - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"unknown ALFWorld task type(s) {unknown}; expected a subset of {list(TASK_TYPES)}")
    if not requested:
        raise ValueError(f"task_types is empty; expected a subset of {list(TASK_TYPES)}")
    return tuple(name for name in TASK_TYPES if name in requested)


@dataclass(frozen=True)
class TaskSpec:
    """What a game asks for, in ALFRED type names.

    Attributes:
        task_type: Short task type (a key of :data:`TASK_TYPES`).
        object_target: Type of the object to handle, e.g. ``"Mug"``.
        parent_target: Receptacle type to put it in (``""`` for ``look``).
        toggle_target: Lamp type to look under (``""`` unless ``look``).
    """

    task_type: str
    object_target: str
    parent_target: str = ""
    toggle_target: str = ""

    def __post_init__(self) -> None:
        validate_task_types([self.task_type])
        needs_lamp = self.task_type == "look"
        if needs_lamp != bool(self.toggle_target) or needs_lamp == bool(self.parent_target):
            raise ValueError(
                f"task {self.task_type!r} needs "
                + ("a toggle_target and no parent_target" if needs_lamp else "a parent_target and no toggle_target")
                + f", got parent_target={self.parent_target!r}, toggle_target={self.toggle_target!r}"
            )

    @property
    def alfred_task_type(self) -> str:
        """ALFRED's name of the task type, e.g. ``"pick_heat_then_place_in_recep"``."""
        return TASK_TYPES[self.task_type]

    def goal_pddl(self) -> str:
        """The ``(:goal ...)`` block from ALFRED's goal library, closing the problem's ``define``."""
        template = goal_library.gdict[self.alfred_task_type]["pddl"]
        goal = template.format(obj=self.object_target, recep=self.parent_target, toggle=self.toggle_target, mrecep="")
        # The library writes PDDL's type separator as "#".
        return goal.replace("#", "-")

    def sentence_templates(self) -> list[str]:
        """The goal library's sentences for this task, filled in, e.g. ``"put a hot egg in garbagecan"``."""
        return [
            template.format(
                obj=self.object_target.lower(),
                recep=self.parent_target.lower(),
                toggle=self.toggle_target.lower(),
                mrecep="",
            )
            for template in goal_library.gdict[self.alfred_task_type]["templates"]
        ]

    def pddl_params(self) -> dict[str, Any]:
        """ALFRED's ``traj_data["pddl_params"]`` for this task."""
        return {
            "object_target": self.object_target,
            "parent_target": self.parent_target,
            "toggle_target": self.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        }

    @classmethod
    def from_traj_data(cls, traj_data: Mapping[str, Any]) -> TaskSpec:
        """The task of an ALFWorld ``traj_data.json`` (real or generated).

        Raises:
            ValueError: for a task type outside the six, or missing fields.
        """
        alfred_type = traj_data.get("task_type")
        if alfred_type not in SHORT_NAMES:
            raise ValueError(f"traj_data task_type {alfred_type!r} is not one of ALFWorld's six: {sorted(SHORT_NAMES)}")
        params = traj_data.get("pddl_params")
        if not isinstance(params, Mapping) or not params.get("object_target"):
            raise ValueError("traj_data has no pddl_params.object_target")
        short = SHORT_NAMES[alfred_type]
        return cls(
            task_type=short,
            object_target=str(params["object_target"]),
            parent_target="" if short == "look" else str(params.get("parent_target") or ""),
            toggle_target=str(params.get("toggle_target") or "") if short == "look" else "",
        )
