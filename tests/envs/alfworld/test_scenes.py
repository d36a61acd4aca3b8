"""Scene inventories read from the ``alfworld`` wheel, and the task vocabulary built on them."""

from __future__ import annotations

import pytest

from envs.alfworld.generate import SPLIT_SCENES, eligible_scenes, task_choices
from envs.alfworld.scenes import (
    HELD_OUT_SCENES,
    PICKUPABLE_TYPES,
    STATIC_RECEPTACLE_TYPES,
    TRAINING_SCENES,
    load_scene,
    receptacle_type_of,
)
from envs.alfworld.tasks import TASK_TYPES, TaskSpec, validate_task_types

ALL_SCENES = sorted(TRAINING_SCENES + HELD_OUT_SCENES)


def test_alfred_scene_sets_are_disjoint_and_cover_120_rooms():
    assert len(ALL_SCENES) == len(set(ALL_SCENES)) == 120
    assert not set(TRAINING_SCENES) & set(HELD_OUT_SCENES)
    assert set(SPLIT_SCENES["unseen"]).isdisjoint(SPLIT_SCENES["train"])


@pytest.mark.parametrize("number", ALL_SCENES)
def test_every_scene_has_receptacles_at_distinct_poses(number):
    scene = load_scene(number)
    assert scene.floor_plan == f"FloorPlan{number}"
    assert scene.receptacles and scene.object_types
    poses = [r.pose for r in scene.receptacles]
    assert len(set(poses)) == len(poses)
    assert len({r.alfred_id for r in scene.receptacles}) == len(poses)
    assert scene.receptacle_types <= STATIC_RECEPTACLE_TYPES
    assert set(scene.object_types) <= PICKUPABLE_TYPES
    for receptacle in scene.receptacles:
        assert receptacle_type_of(receptacle.alfred_id) == receptacle.receptacle_type


def test_kitchen_gets_the_receptacles_its_pose_file_lacks():
    kitchen = load_scene(1)
    types = kitchen.receptacle_types
    # Listed in FloorPlan1-objects.json but absent from FloorPlan1-openable.json.
    assert {"CoffeeMachine", "StoveBurner", "Toaster", "GarbageCan"} <= types
    sink = kitchen.receptacles_of_types(["SinkBasin"])[0]
    assert sink.alfred_id.startswith("Sink|") and sink.alfred_id.endswith("|SinkBasin")


def test_scene_inventory_is_the_same_on_every_load():
    load_scene.cache_clear()
    first = load_scene(12)
    load_scene.cache_clear()
    again = load_scene(12)
    assert first.receptacles == again.receptacles
    assert first.object_types == again.object_types


@pytest.mark.parametrize("number", [0, 31, 500])
def test_unknown_scene_number_is_rejected(number):
    with pytest.raises(ValueError, match="not an ALFRED scene"):
        load_scene(number)


@pytest.mark.parametrize("split", ["train", "unseen"])
@pytest.mark.parametrize("task_type", list(TASK_TYPES))
def test_every_split_has_rooms_for_every_task_type(split, task_type):
    assert eligible_scenes(split, task_type)


def test_task_choices_follow_alfred_rules():
    kitchen, bedroom = load_scene(1), load_scene(301)
    assert task_choices(kitchen, "look") == []  # ALFRED looks only in living rooms and bedrooms
    assert task_choices(bedroom, "heat") == []  # and heats only in kitchens
    for task in task_choices(kitchen, "heat"):
        assert task.parent_target != "Microwave"
    assert all(task.toggle_target in bedroom.lamp_types for task in task_choices(bedroom, "look"))


def test_task_spec_renders_alfred_goal_and_sentences():
    task = TaskSpec("clean", "Mug", parent_target="CoffeeMachine")
    goal = task.goal_pddl()
    assert "(isClean ?o)" in goal and "MugType" in goal and "CoffeeMachineType" in goal and "#" not in goal
    assert "put a clean mug in coffeemachine" in task.sentence_templates()
    assert TaskSpec.from_traj_data({"task_type": task.alfred_task_type, "pddl_params": task.pddl_params()}) == task


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task_type": "look", "object_target": "Book", "parent_target": "Desk"},
        {"task_type": "pick", "object_target": "Book", "toggle_target": "DeskLamp"},
        {"task_type": "slice", "object_target": "Apple", "parent_target": "Plate"},
    ],
)
def test_inconsistent_task_spec_is_rejected(kwargs):
    with pytest.raises(ValueError):
        TaskSpec(**kwargs)


def test_task_type_selection():
    assert validate_task_types(None) == tuple(TASK_TYPES)
    assert validate_task_types(["pick2", "heat"]) == ("heat", "pick2")
    with pytest.raises(ValueError, match="unknown ALFWorld task type"):
        validate_task_types(["heat", "slice"])
    with pytest.raises(ValueError, match="empty"):
        validate_task_types([])
