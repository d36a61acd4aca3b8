"""The fast ALFWorld engine plays exactly like TextWorld's stock PDDL engine.

Both engines run side by side in one process on generated games of all six
task types: the stored walkthrough, a seeded random policy mixing admissible
and invalid commands, resets in the middle of play, and games switched and
reloaded from the fast engine's cache. Observations, admissible commands,
scores, ``done``, ``won`` and the fact lists must be equal at every step.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos
from textworld.envs.pddl import PddlEnv
from textworld.envs.pddl import logic as pddl_logic
from textworld.envs.pddl.textgen import ContextSensitiveGrammar
from textworld.envs.wrappers import Filter

from envs.alfworld.engine import REQUEST_INFOS, make_engine
from envs.alfworld.fast_engine import CachedGrammar, FastPddlEnv, FastPddlState, fluent_predicates
from envs.alfworld.generate import generate_games, generated_root
from envs.alfworld.tasks import TASK_TYPES

#: Commands the engine does not know (or knows once stripped), played between admissible ones.
ODD_COMMANDS = ("", "   ", "jump", "LOOK", "  look  ", "go to the moon", "take everything from cabinet 1")
RANDOM_STEPS = 20


@pytest.fixture(scope="module")
def game_files(tmp_path_factory) -> dict[str, Path]:
    """One generated training game per task type (shared with the other ALFWorld test modules)."""
    root = generated_root(tmp_path_factory.getbasetemp() / "alfworld-cache")
    paths = generate_games(root, "train", num_games=len(TASK_TYPES), seed=0)
    return {path.parent.name.split("-")[0]: path for path in paths}


def walkthrough(game_file: Path) -> list[str]:
    return json.loads(game_file.read_text())["walkthrough"]


def observed(state: textworld.GameState) -> dict:
    """Everything the environment and the expert read from a game state."""
    return {
        "feedback": state.feedback,
        "admissible_commands": state["admissible_commands"],
        "valid_commands": state["_valid_commands"],
        "won": state["won"],
        "lost": state["lost"],
        "facts": list(state["_facts"]),
        "entities": {key: info.name for key, info in state["_entity_infos"].items()},
        "command_templates": state["command_templates"],
    }


class SideBySide:
    """A stock and a fast engine fed the same commands; every call checks that they agree."""

    def __init__(self, stock: textworld.core.Environment, fast: textworld.core.Environment) -> None:
        self.stock, self.fast = stock, fast

    def reset(self) -> textworld.GameState:
        stock_state, fast_state = self.stock.reset(), self.fast.reset()
        assert observed(fast_state) == observed(stock_state)
        return fast_state

    def step(self, command: str) -> tuple[textworld.GameState, int, bool]:
        (stock_state, stock_score, stock_done), (fast_state, fast_score, fast_done) = (
            self.stock.step(command),
            self.fast.step(command),
        )
        assert observed(fast_state) == observed(stock_state), f"after {command!r}"
        assert (fast_score, fast_done) == (stock_score, stock_done), f"after {command!r}"
        return fast_state, fast_score, fast_done


def play_randomly(engines: SideBySide, state: textworld.GameState, seed: int, steps: int) -> None:
    """A seeded policy: mostly admissible commands, sometimes one of :data:`ODD_COMMANDS`; resets when won."""
    rng = random.Random(seed)
    for _ in range(steps):
        pool = ODD_COMMANDS if rng.random() < 0.2 else state["admissible_commands"]
        state, _, done = engines.step(rng.choice(pool))
        if done:
            state = engines.reset()


@pytest.mark.parametrize("task_type", list(TASK_TYPES))
def test_walkthrough_and_random_play_match_the_stock_engine(game_files, task_type):
    game_file = game_files[task_type]
    engines = SideBySide(make_engine(game_file, fast=False), make_engine(game_file, fast=True))
    assert type(engines.stock.unwrapped) is PddlEnv
    assert type(engines.stock.unwrapped._logic.grammar) is ContextSensitiveGrammar
    assert type(engines.stock.unwrapped._pddl_state) is pddl_logic.PddlState
    assert isinstance(engines.fast.unwrapped, FastPddlEnv)

    engines.reset()
    for command in walkthrough(game_file):
        state, score, done = engines.step(command)
    assert state["won"] and score == 1 and done

    state = engines.reset()
    play_randomly(engines, state, seed=list(TASK_TYPES).index(task_type), steps=RANDOM_STEPS)
    # Restore in the middle of an episode, then play on.
    state = engines.reset()
    play_randomly(engines, state, seed=7, steps=5)


def test_reloading_cached_games_matches_fresh_stock_loads(game_files):
    first, second = game_files["look"], game_files["pick"]
    fast = make_engine(first, fast=True)
    first_logic = fast.unwrapped._logic
    fast.reset()
    fast.step(walkthrough(first)[0])
    for game_file in (second, first):
        fast.load(str(game_file))
        engines = SideBySide(make_engine(game_file, fast=False), fast)
        state = engines.reset()
        play_randomly(engines, state, seed=3, steps=4)
    assert fast.unwrapped._logic is first_logic  # reloaded from the cache, not translated again


def test_alfworld_wrappers_with_expert_facts_and_planner_match(game_files):
    """ALFWorld's own wrapper stack: its hand-coded expert reads facts and draws from ``random``;
    ``policy_commands`` asks fast-downward for a plan from the current state at every step."""

    def alfworld_stack(base: PddlEnv, game_file: Path) -> Filter:
        env = base
        for wrapper in (AlfredDemangler(), AlfredInfos, AlfredExpert(), Filter):
            env = wrapper(env)
        env.load(str(game_file))
        return env

    def infos() -> textworld.EnvInfos:
        extras = ["gamefile", "expert_plan", "walkthrough"]
        return textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=True, extras=extras)

    def reset_both() -> tuple:
        random.seed(0)
        stock_out = stock.reset()
        random.seed(0)
        assert fast.reset() == stock_out
        return stock_out

    for task_type in ("clean", "look"):
        game_file = game_files[task_type]
        stock, fast = alfworld_stack(PddlEnv(infos()), game_file), alfworld_stack(FastPddlEnv(infos()), game_file)
        rng = random.Random(1)
        for steps in (15, 5):
            stock_out = reset_both()
            for step in range(steps):
                command = rng.choice([*stock_out[-1]["admissible_commands"], "", "jump"])
                random.seed(step)
                stock_out = stock.step(command)
                random.seed(step)
                assert fast.step(command) == stock_out, f"step {step}: {command!r}"
            infos_out = stock_out[-1]
            assert infos_out["facts"] and infos_out["extra.expert_plan"] and infos_out["policy_commands"]


def test_every_command_and_feedback_derivation_matches_the_stock_grammar(game_files):
    """In each visited state, derive every applicable action's command and feedback with both grammars."""
    engine = make_engine(game_files["clean"], fast=True)
    env = engine.unwrapped
    cached = env._logic.grammar
    stock = ContextSensitiveGrammar()
    stock.update(cached)

    def derive_both(start: str, context: dict) -> None:
        assert cached.derive(start, context) == stock.derive(start, context), start

    state = engine.reset()
    rng = random.Random(5)
    for _ in range(12):
        for action in state["_valid_actions"]:
            context = {
                "state": env._pddl_state,
                "facts": list(env._pddl_state.facts),
                "variables": {ph.name: env._entity_infos[var.name] for ph, var in action.mapping.items()},
                "mapping": action.mapping,
                "entity_infos": env._entity_infos,
            }
            derive_both(env._logic.actions[action.name].template, context)
            derive_both(action.feedback_rule, context)
        state, _, _ = engine.step(rng.choice(state["admissible_commands"]))


def test_memo_keys_follow_what_a_template_reads(game_files):
    grammar = make_engine(game_files["pick"], fast=True).unwrapped._logic.grammar
    assert isinstance(grammar, CachedGrammar)

    go_to = grammar.reads_of("go to [{r.name | receptacleatlocation(r:receptacle, lend:location)}]")
    assert {(ph.name, ph.type) for ph in go_to.placeholders} == {("r", "receptacle"), ("lend", "location")}
    assert go_to.fluent_predicates == ()  # receptacles never move: the text is a function of r and lend

    arrive = grammar.reads_of("#GotoLocation.feedback#")
    assert arrive.fluent_predicates == ("inreceptacle", "opened")
    look = grammar.reads_of("#look.feedback#")
    assert look.fluent_predicates == ("atlocation", "not_inreceptacle", "objectatlocation")


def test_fluent_predicates_are_those_actions_change(game_files):
    state = make_engine(game_files["look"], fast=True).unwrapped._initial_state
    fluent = fluent_predicates(state.task)
    assert {
        "atlocation",
        "holds",
        "holdsany",
        "inreceptacle",
        "objectatlocation",
        "opened",
        "istoggled",
        "ison",
        "isclean",
        "ishot",
        "iscool",
        "issliced",
        "checked",
    } <= fluent
    assert fluent.isdisjoint({"receptacleatlocation", "openable", "receptacletype", "objecttype", "cancontain"})


def test_restored_state_is_the_freshly_translated_state(game_files):
    game_file = game_files["cool"]
    engine = make_engine(game_file, fast=True)
    env = engine.unwrapped
    engine.reset()
    for command in walkthrough(game_file)[:4]:
        engine.step(command)
    restored = env._initial_state.restored()

    data = json.loads(game_file.read_text())
    fresh = FastPddlState(env.downward_lib, data["pddl_problem"], env._logic)
    assert list(restored.facts) == list(fresh.facts)
    assert restored._vars_by_name == fresh._vars_by_name
    assert dict(restored._vars_by_type) == dict(fresh._vars_by_type)
    assert restored._var_counts == fresh._var_counts
    assert [a.name for a in restored.all_applicable_actions()] == [a.name for a in fresh.all_applicable_actions()]


def test_bad_games_and_calls_are_rejected(tmp_path, game_files):
    env = FastPddlEnv(REQUEST_INFOS)
    with pytest.raises(RuntimeError, match="before load"):
        env.reset()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        env.load(str(tmp_path / "missing" / "game.tw-pddl"))
    not_json = tmp_path / "not-json.tw-pddl"
    not_json.write_text("(define (problem p))")
    with pytest.raises(ValueError, match="is not JSON"):
        env.load(str(not_json))
    data = json.loads(game_files["pick"].read_text())
    del data["pddl_problem"]
    incomplete = tmp_path / "incomplete.tw-pddl"
    incomplete.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"lacks the text field\(s\) \['pddl_problem'\]"):
        env.load(str(incomplete))
    with pytest.raises(ValueError, match="max_cached_games"):
        FastPddlEnv(REQUEST_INFOS, max_cached_games=0)

    env.load(str(game_files["pick"]))
    with pytest.raises(RuntimeError, match="before reset"):
        env.step("look")
    assert "look" in env.reset()["admissible_commands"]
