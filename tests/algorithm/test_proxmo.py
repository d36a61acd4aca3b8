"""ProxMO end to end on Ray: grouped rollouts, DDP learners, learning, checkpoints.

The policy is a tiny randomly initialised Llama with a word-level tokenizer, given a
few supervised steps so that it answers in the ``<action> press <colour> </action>``
format with a roughly uniform colour; reinforcement learning then has to find the
rewarded colour. The game is ``TextGuess-v0`` (tests/text_env.py) behind the real
LLM wrappers (prompt rendering and action parsing).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.tune.registry import get_trainable_cls, register_env
from transformers import AutoModelForCausalLM, AutoTokenizer

from envs.llm_wrappers import make_llm_env
from rllib_proxmo.advantages import compute_advantages
from rllib_proxmo.algorithm.proxmo import (
    EXPECTED_MIXED_GROUPS,
    SAMPLER_STATE,
    TASK_OUTCOMES,
    TASKS_PLAYED,
    ProxMO,
    ProxMOConfig,
)
from rllib_proxmo.analysis.rollout_files import load_rollouts
from rllib_proxmo.export import main as export_main
from rllib_proxmo.rollout.env_runner import GroupedEnvRunner
from rllib_proxmo.rollout.episodes import GroupRequest
from rllib_proxmo.testing import build_tiny_chat_model
from tests.text_env import DEFAULT_BUTTONS, TextGuessEnv

REPO = Path(__file__).resolve().parents[2]
ENV_ID = "tests.text_env:TextGuess-v0"
WORDS = ["press", "look", "help", "<action>", "</action>", *DEFAULT_BUTTONS]
ANSWERS = [f"<action> press {colour} </action>" for colour in DEFAULT_BUTTONS]


def _warm_start(directory: Path) -> str:
    """Tiny model taught the answer format (uniform over colours) with a few Adam steps."""
    build_tiny_chat_model(directory, WORDS, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    prompts = []
    for task_id in range(len(DEFAULT_BUTTONS) ** 2):
        env = make_llm_env(TextGuessEnv(code_length=2), require_think=False)
        prompts.append(env.reset(seed=0, options={"task_id": task_id})[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(60):
        prompt = prompts[step % len(prompts)]
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(ANSWERS[step % len(ANSWERS)], add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        ids = torch.tensor([prompt_ids + answer_ids])
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _warm_start(tmp_path_factory.mktemp("warm_tiny"))


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


def _config(model_dir: str, *, code_length: int = 2, **training) -> ProxMOConfig:
    settings = dict(
        group_size=4, tasks_per_iteration=2, llm_env_config={"require_think": False}, lr=1e-3, micro_batch_size=3
    )
    settings.update(training)
    return (
        ProxMOConfig()
        .environment(ENV_ID, env_config={"code_length": code_length})
        .rl_module(model_config={"model_name_or_path": model_dir, "max_new_tokens": 6})
        .training(**settings)
        .debugging(seed=7)
    )


def _crash_once_text_guess(env_config: dict) -> TextGuessEnv:
    """TextGuess whose first reset in any process kills that process (marker file)."""
    marker = Path(env_config["crash_marker"])

    class CrashOnce(TextGuessEnv):
        def reset(self, *, seed=None, options=None):
            if not marker.exists():
                marker.write_text("crashed")
                os._exit(1)
            return super().reset(seed=seed, options=options)

    return CrashOnce(code_length=env_config["code_length"])


def _learner(result: dict) -> dict:
    return result["learners"][DEFAULT_MODULE_ID]


def _assert_finite_metrics(result: dict) -> None:
    for key in ("kl", "clip_fraction", "entropy", "grad_norm", "policy_loss", "ratio_max_deviation"):
        assert math.isfinite(_learner(result)[key]), key
    for key in ("success_rate", "episode_len_mean", "format_valid_rate", "admissible_action_rate", "score_mean"):
        assert math.isfinite(result["env_runners"][key]), key
    proxmo = result["proxmo"]
    for key in (
        "generated_tokens_per_s",
        "time_sampling_s",
        "time_advantages_s",
        "time_learning_s",
        "time_weight_sync_s",
        "advantage_time_fraction",
    ):
        assert math.isfinite(proxmo[key]) and proxmo[key] >= 0, key
    for key in ("psc_weight_min", "psc_weight_max", "psa_effective_neighbours", "advantage_std"):
        assert math.isfinite(proxmo["advantages"][key]), key
    assert proxmo["num_groups"] == 2 and proxmo["num_groups_dropped"] == 0


@pytest.mark.slow
def test_one_env_runner_local_vs_two_ddp_learners_see_the_same_advantages_and_update(model_dir, ray_session):
    runs = {}
    for num_learners in (0, 2):
        config = _config(model_dir, code_length=1).env_runners(num_env_runners=1).learners(num_learners=num_learners)
        algo = config.build_algo()
        runs[num_learners] = [algo.train() for _ in range(2)]
        algo.stop()
    for single, ddp in zip(runs[0], runs[2]):
        _assert_finite_metrics(single)
        _assert_finite_metrics(ddp)
        assert single["env_runners"]["num_turns"] == ddp["env_runners"]["num_turns"]
        assert single["proxmo"]["advantages"] == ddp["proxmo"]["advantages"]
        for key in ("grad_norm", "policy_loss", "kl", "entropy", "num_response_tokens"):
            assert _learner(ddp)[key] == pytest.approx(_learner(single)[key], rel=1e-4, abs=1e-7), key
        for run in (single, ddp):
            assert _learner(run)["ratio_max_deviation"] == 0.0 and _learner(run)["num_optimizer_steps"] == 1
    assert max(run["proxmo"]["advantages"]["advantage_std"] for run in runs[0]) > 0
    assert _learner(runs[0][0])["kl"] == 0.0 and _learner(runs[2][0])["kl"] == 0.0
    assert _learner(runs[0][1])["kl"] > 0.0


def _success(algo: Algorithm, iterations: int) -> list[float]:
    return [algo.train()["env_runners"]["success_rate"] for _ in range(iterations)]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["grpo", "proxmo"])
def test_success_rises_on_a_one_answer_task(model_dir, ray_session, estimator):
    config = _config(
        model_dir, code_length=1, estimator=estimator, task_ids=[1], group_size=8, tasks_per_iteration=4, lr=1e-3
    )
    algo = config.build_algo()
    rates = _success(algo, 15)
    algo.stop()
    # From about 1/3 (a uniform choice among three colours) to a clear majority.
    assert np.mean(rates[:2]) < 0.45, rates
    assert np.mean(rates[-3:]) >= 0.65, rates
    assert np.mean(rates[-3:]) - np.mean(rates[:2]) >= 0.3, rates


class SlowFirstSetStateRunner(GroupedEnvRunner):
    """The real env runner, busy for a few seconds in its first ``set_state`` (a loaded machine).

    The first call is RLlib's build-time weight push, so a restore right after the build
    pushes the checkpoint's weights while that call is still in flight.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._busy_s = 5.0

    def set_state(self, state):
        time.sleep(self._busy_s)
        self._busy_s = 0.0
        super().set_state(state)


def _runner_weights(algo: Algorithm) -> list[dict[str, torch.Tensor]]:
    """The inference-only weights every env runner (remote ones, else the local one) holds now."""
    group = algo.env_runner_group
    if group.num_remote_env_runners():
        states = group.foreach_env_runner(lambda r: r.module.get_state(inference_only=True), local_env_runner=False)
    else:
        states = [algo.env_runner.module.get_state(inference_only=True)]
    assert states
    return states


def _learner_weights(algo: Algorithm) -> dict[str, torch.Tensor]:
    return algo.learner_group.get_state(components="learner/rl_module", inference_only=True)["learner"]["rl_module"][
        DEFAULT_MODULE_ID
    ]


@pytest.mark.parametrize(("num_env_runners", "task_sampling"), [(0, "uniform"), (1, "informative")])
def test_checkpoint_resume_continues_identically(model_dir, ray_session, tmp_path, num_env_runners, task_sampling):
    # RLlib's restore push meets its build-time push still in flight on a busy runner.
    config = _config(model_dir, task_sampling=task_sampling, task_ids=[0, 1, 2, 3]).env_runners(
        num_env_runners=num_env_runners, env_runner_cls=SlowFirstSetStateRunner
    )
    algo = config.build_algo()
    first = algo.train()
    checkpoint = algo.save(str(tmp_path / "ckpt")).checkpoint.path
    sampler = algo.get_state(components=[])[SAMPLER_STATE]
    continued = [algo.train() for _ in range(2)]
    weights = _learner_weights(algo)
    algo.stop()
    if task_sampling == "informative":
        # Two tasks of four played 4 times each: their outcomes are kept and weight the next draws.
        assert sum(sampler[TASK_OUTCOMES]["plays"]) == 8 and first["proxmo"][TASKS_PLAYED] == 2
        assert 0 < first["proxmo"][EXPECTED_MIXED_GROUPS] < 1
        assert continued[-1]["proxmo"][TASKS_PLAYED] >= 2
    else:
        assert TASK_OUTCOMES not in sampler and TASKS_PLAYED not in first["proxmo"]

    restored = Algorithm.from_checkpoint(checkpoint)
    assert restored.training_iteration == 1
    assert restored.get_state(components=[])[SAMPLER_STATE] == sampler
    learner = _learner_weights(restored)
    for runner in _runner_weights(restored):
        for name, value in learner.items():
            torch.testing.assert_close(runner[name], value, rtol=0, atol=0, msg=f"env runner weight {name}")
    resumed = [restored.train() for _ in range(2)]
    resumed_weights = _learner_weights(restored)
    restored.stop()
    for a, b in zip(continued, resumed):
        assert a["proxmo"]["advantages"] == b["proxmo"]["advantages"]
        assert a["env_runners"]["num_turns"] == b["env_runners"]["num_turns"]
        for key in ("grad_norm", "policy_loss", "kl", "sampler_logp_gap_max"):
            assert _learner(a)[key] == pytest.approx(_learner(b)[key], rel=1e-6, abs=1e-9), key
    for name, value in weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=0)


def _dir_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_checkpoint_stores_the_weights_once_and_exports_a_hugging_face_model(model_dir, ray_session, tmp_path):
    config = (
        _config(model_dir)
        .env_runners(num_env_runners=1)
        .evaluation(evaluation_interval=1, evaluation_num_tasks=1, evaluation_num_env_runners=0)
    )
    algo = config.build_algo()
    algo.train()
    checkpoint = Path(algo.save(str(tmp_path / "ckpt")).checkpoint.path)
    policy = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    fp32_model = sum(p.numel() * 4 for p in policy.model.parameters())
    batch = {"input_ids": torch.tensor([[4, 9, 12, 7, 8]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        expected = policy.model(**batch).logits
    algo.stop()

    # No env-runner module copies, no reference copy: the policy (fp32) and AdamW's two moments.
    assert not (checkpoint / "env_runner").exists() and not (checkpoint / "eval_env_runner").exists()
    ratio = _dir_bytes(checkpoint) / fp32_model
    print(f"checkpoint / fp32 model size = {ratio:.3f}")
    assert ratio <= 3.2, ratio

    out = tmp_path / "exported"
    subprocess.run(
        [sys.executable, "-m", "rllib_proxmo.export", str(checkpoint), str(out)],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        f.name for f in out.iterdir()
    }
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, expected, rtol=0, atol=1e-6)


def test_export_merges_a_lora_adapter(model_dir, ray_session, tmp_path):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    algo = (
        _config(model_dir, code_length=1, lr=1e-2)
        .rl_module(model_config={"model_name_or_path": model_dir, "max_new_tokens": 6, "lora": lora})
        .build_algo()
    )
    algo.train()
    checkpoint = algo.save(str(tmp_path / "ckpt")).checkpoint.path
    policy = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    batch = {"input_ids": torch.tensor([[4, 9, 12, 7, 8]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        expected = policy.model(**batch).logits
        with policy.model.disable_adapter():
            base = policy.model(**batch).logits
    algo.stop()
    assert not torch.allclose(expected, base)
    export_main([checkpoint, str(tmp_path / "exported")])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    assert not any("lora_" in name for name in exported.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, expected, rtol=0, atol=1e-5)


def test_a_lost_weight_push_fails_the_next_sample(model_dir, ray_session):
    algo = _config(model_dir).build_algo()
    algo.env_runner.weights_id = "stale"
    with pytest.raises(RuntimeError, match="a weight push was lost"):
        algo.train()
    algo.stop()


def test_evaluation_reports_episode_metrics(model_dir, ray_session):
    config = _config(model_dir).evaluation(evaluation_interval=1, evaluation_num_tasks=3, evaluation_group_size=1)
    algo = config.build_algo()
    result = algo.train()
    algo.stop()
    evaluation = result["evaluation"]["env_runners"]
    assert evaluation["num_episodes"] == 3
    assert 0.0 <= evaluation["success_rate"] <= 1.0 and math.isfinite(evaluation["episode_len_mean"])


def test_lora_run_updates_only_the_adapter_on_env_runners(model_dir, ray_session):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    algo = (
        _config(model_dir, code_length=1, lr=1e-2)
        .rl_module(model_config={"model_name_or_path": model_dir, "max_new_tokens": 6, "lora": lora})
        .build_algo()
    )
    runner_model = algo.env_runner.module.model
    before = {k: v.clone() for k, v in runner_model.state_dict().items()}
    result = algo.train()
    after = runner_model.state_dict()
    algo.stop()
    assert _learner(result)["kl"] == 0.0 and math.isfinite(_learner(result)["grad_norm"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)


def test_config_rejects_bad_settings(model_dir):
    assert get_trainable_cls("ProxMO") is ProxMO
    with pytest.raises(ValueError, match="task_sampling must be one of"):
        _config(model_dir, task_sampling="hard").validate()
    with pytest.raises(ValueError, match="distinct, hashable task ids"):
        _config(model_dir, task_sampling="informative").validate()
    with pytest.raises(ValueError, match="distinct, hashable task ids"):
        _config(model_dir, task_sampling="informative", task_ids=[0, 1, 0]).validate()
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        _config(model_dir, task_sampling="informative", task_ids=[0, 1], group_size=1).validate()
    with pytest.raises(ValueError, match="estimator"):
        _config(model_dir, estimator="ppo").validate()
    with pytest.raises(ValueError, match="tasks_per_iteration"):
        _config(model_dir, tasks_per_iteration=1).learners(num_learners=2).validate()
    with pytest.raises(ValueError, match="model_name_or_path"):
        ProxMOConfig().environment(ENV_ID).validate()


@pytest.mark.slow
def test_a_crashed_env_runner_is_restarted_and_its_groups_replayed(model_dir, ray_session, tmp_path):
    register_env("CrashOnceTextGuess", _crash_once_text_guess)
    config = (
        _config(model_dir, code_length=1, tasks_per_iteration=4)
        .environment("CrashOnceTextGuess", env_config={"code_length": 1, "crash_marker": str(tmp_path / "crashed")})
        .env_runners(num_env_runners=2)
        .fault_tolerance(restart_failed_env_runners=True)
    )
    algo = config.build_algo()
    result = algo.train()
    algo.stop()
    assert (tmp_path / "crashed").exists()
    assert result["proxmo"]["num_groups_dropped"] == 0 and result["proxmo"]["num_groups"] == 4
    assert result["env_runners"]["num_episodes"] == 16
    assert math.isfinite(_learner(result)["grad_norm"])


def _bad_config_text_guess(env_config: dict) -> TextGuessEnv:
    raise ValueError(f"colour {env_config['colour']!r} is not a button")


@pytest.mark.slow
def test_an_env_that_cannot_be_built_in_a_remote_runner_fails_at_once_with_its_message(model_dir, ray_session):
    register_env("BadConfigTextGuess", _bad_config_text_guess)
    algo = (
        _config(model_dir)
        .environment("BadConfigTextGuess", env_config={"colour": "pink"})
        .env_runners(num_env_runners=1)
        .build_algo()
    )
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="colour 'pink' is not a button") as raised:
            algo.train()
    finally:
        algo.stop()
    assert time.perf_counter() - start < 20  # RLlib's restart took 60 s, then "all groups were lost"
    assert any("raised in env runner 1" in note for note in raised.value.__notes__)


@pytest.mark.slow
def test_a_model_that_cannot_load_fails_before_any_env_runner_starts(ray_session, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _config(str(tmp_path / "missing")).env_runners(num_env_runners=1).build_algo()


@pytest.mark.slow
def test_a_remote_runner_that_cannot_build_its_module_raises_the_original_error(model_dir, ray_session, tmp_path):
    broken = tmp_path / "no_chat_template"
    shutil.copytree(model_dir, broken)
    tokenizer = AutoTokenizer.from_pretrained(broken)
    tokenizer.chat_template = None
    (broken / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(broken)
    with pytest.raises(ValueError, match="has no chat template"):  # was IndexError: list index out of range
        _config(str(broken)).env_runners(num_env_runners=1).build_algo()


def test_group_requests_number_the_groups_of_the_run():
    draws = types.SimpleNamespace(_groups_drawn=0)  # the only state _group_requests keeps
    rng = np.random.default_rng(0)
    groups, _ = ProxMO._group_requests(draws, rng, ["a", "b", "a"], 3, "train-")
    assert [g.task_id for g in groups] == ["a", "b", "a"] and {g.size for g in groups} == {3}
    groups, _ = ProxMO._group_requests(draws, rng, [None, None], 1, "eval-")
    assert [g.group_id for g in groups] == ["eval-3", "eval-4"] and draws._groups_drawn == 5


class _TypedTextGuess(TextGuessEnv):
    """TextGuess whose task k has task type "type<k>"."""

    def _info(self, obs, *, won):
        return {**super()._info(obs, won=won), "task_type": f"type{self._task_id}"}


def test_results_hold_success_rates_of_the_task_types_played_and_no_nan(model_dir, ray_session):
    register_env("TypedTextGuess", lambda env_config: _TypedTextGuess(**env_config))
    config = _config(model_dir, code_length=1, tasks_per_iteration=1, task_ids=[0, 1, 2]).environment(
        "TypedTextGuess", env_config={"code_length": 1}
    )
    algo = config.build_algo()
    played = []
    for _ in range(4):
        runners = algo.train()["env_runners"]
        assert all(math.isfinite(v) for v in runners.values() if isinstance(v, float)), runners
        played.append({key for key in runners if key.startswith("success_rate/")})
    algo.stop()
    assert all(len(types) == 1 for types in played)
    # The case that produced NaN: a type of an earlier iteration is not played in a later one.
    assert any(played[i] - played[i + 1] for i in range(len(played) - 1))


def test_generation_batches_shrink_as_episodes_finish(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir, code_length=2))
    batch_sizes = []
    generate = runner.engine.generate

    def recording_generate(prompts, params, choices=None):
        batch_sizes.append(len(prompts))
        return generate(prompts, params, choices)

    runner.engine.generate = recording_generate
    episodes = runner.sample(groups=[GroupRequest("a", 1, 4), GroupRequest("b", 2, 4)], seed=3)
    runner.stop()
    assert [e.group_id for e in episodes] == ["a"] * 4 + ["b"] * 4
    lengths = [len(e) for e in episodes]
    assert batch_sizes == [sum(length > turn for length in lengths) for turn in range(max(lengths))]
    assert batch_sizes[0] == 8 and batch_sizes[-1] < 8
    for episode in episodes:
        for turn in episode.turns:
            assert turn.prompt_ids and turn.response_ids and isinstance(turn.state, str)


def _tiny_alfworld_config(tmp_path) -> ProxMOConfig:
    """ProxMO on 12 generated ALFWorld games with a tiny model that knows ALFWorld's words."""
    words = "go to take put open look cabinet drawer 1 2 <action> </action> <think> </think>".split()
    model = str(build_tiny_chat_model(tmp_path / "tiny", words))
    return (
        ProxMOConfig()
        .environment("ALFWorld-v0", env_config={"num_games": 12})
        .rl_module(model_config={"model_name_or_path": model, "max_new_tokens": 8})
    )


def test_alfworld_group_members_share_task_and_initial_state(tmp_path):
    config = _tiny_alfworld_config(tmp_path).training(max_turns=2)
    runner = GroupedEnvRunner(config=config)
    episodes = runner.sample(groups=[GroupRequest("a", 11, 3), GroupRequest("b", 12, 3)], seed=0, max_turns=2)
    runner.stop()
    for group in ("a", "b"):
        members = [e for e in episodes if e.group_id == group]
        assert len(members) == 3
        assert len({e.task_id for e in members}) == 1 and len({e.turns[0].state for e in members}) == 1
        assert members[0].task_type in {"pick", "look", "clean", "heat", "cool", "pick2"}
        assert all(len(e) == 2 and e.truncated for e in members)


@pytest.mark.slow
def test_evaluation_plays_the_unseen_alfworld_split(tmp_path):
    config = (
        _tiny_alfworld_config(tmp_path)
        .training(max_turns=1, tasks_per_iteration=1, group_size=2)
        .evaluation(
            evaluation_interval=1,
            evaluation_num_tasks=3,
            evaluation_config={"env_config": {"num_games": 12, "split": "unseen"}},
        )
    )
    algo = config.build_algo()
    try:
        result = algo.evaluate()
        eval_runner = algo.eval_env_runner_group.local_env_runner
        played = [env.unwrapped for env in eval_runner._envs]
    finally:
        algo.stop()
    metrics = result["env_runners"]
    assert metrics["num_episodes"] == 3 and 0.0 <= metrics["success_rate"] <= 1.0
    assert any(key.startswith("success_rate/") for key in metrics)
    assert played and all(env.split == "unseen" for env in played)


def test_rollouts_of_every_iteration_are_saved_for_offline_tuning(model_dir, ray_session, tmp_path):
    algo = _config(model_dir, rollouts_dir=str(tmp_path / "rollouts")).build_algo()
    results = [algo.train() for _ in range(2)]
    algo.stop()
    rollouts = load_rollouts(tmp_path / "rollouts")
    assert sorted(set(rollouts["iteration"].tolist())) == [0, 1]
    turns = sum(result["env_runners"]["num_turns"] for result in results)
    assert len(rollouts["t"]) == turns and all(isinstance(s, str) and s for s in rollouts["state"])
    assert set(rollouts["group_id"].tolist()) == {0, 1}  # two task groups per iteration
    # The saved steps reproduce the advantages' inputs: the core accepts them as they are.
    first = rollouts["iteration"] == 0
    columns = ("group_id", "episode_id", "t", "reward", "success")
    arrays = {name: rollouts[name][first] for name in columns}
    states = [s for s, keep in zip(rollouts["state"], first, strict=True) if keep]
    assert np.all(np.isfinite(compute_advantages(**arrays, state=states)))
    # What the agent did and the advantage the learner gave it: with the run's own estimator (the
    # default ProxMO) and the saved penalties, the core gives back the saved advantages.
    saved = compute_advantages(**arrays, state=states, penalty=rollouts["penalty"][first])
    np.testing.assert_allclose(rollouts["advantage"][first], saved, rtol=1e-6, atol=1e-9)
    admissible = rollouts["admissible"]
    assert admissible.dtype == bool and admissible.any()
    commands = {f"press {colour}" for colour in DEFAULT_BUTTONS} | {"look", "help"}
    assert all(action in commands for action, ok in zip(rollouts["action"], admissible, strict=True) if ok)
    assert all(isinstance(action, str) for action in rollouts["action"])
