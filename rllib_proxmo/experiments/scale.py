"""Run sizes: the paper's GPU run and the CPU-sized run, written once.

The main job (:mod:`rllib_proxmo.experiments.main_job`), the Tune runner of
``tuned_examples/`` (:mod:`rllib_proxmo.experiments.tune_runner`) and
``benchmarks/iteration.py`` take their defaults from :data:`PAPER` and :data:`CPU`
and their env settings from :func:`env_configs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs import ALFWORLD, WEBSHOP

PAPER_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
CPU_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Scale:
    """Run size of one variant (paper GPU run or CPU-sized run).

    Attributes:
        name: ``"paper"`` or ``"cpu"`` (an MLflow tag, and the key of :func:`env_configs`).
        model: Default ``model_name_or_path``.
        tasks_per_iteration, group_size: Task groups per iteration x rollouts per task.
        iterations: Default number of training iterations.
        max_turns: Turn cut of an episode (None: the env's ``max_steps``).
        max_new_tokens: Response length limit in tokens.
        eval_temperature: Sampling temperature of the held-out evaluation (0: greedy).
        minibatch_size: Turns per optimizer step (the release: 256 step rows; the CPU run
            takes several steps per iteration from its 24 or so turns).
        micro_batch_size: Turns per gradient-accumulation micro-batch.
        dtype: Compute and inference dtype of the policy.
        evaluation_interval: Evaluate on the held-out split every this many iterations (0: never).
        checkpoint_every: The main job saves a checkpoint every this many iterations (0: only
            at the end and when interrupted).
        evaluation_num_tasks: Held-out tasks per evaluation (one rollout each).
        num_games: Generated ALFWorld games per split (None: ALFWorld's own data).
        task_types: ALFWorld task types to play (None: all six).
        max_prompt_tokens: Prompt token limit per env id (the env runner's
            ``max_prompt_tokens``: older history turns are dropped to fit); an env
            not listed has none. See :meth:`prompt_limit`.
        lr: Learning rate of the RL updates.
        trainable_layers: Train only this many top decoder layers (None: all weights).
        reuse_sampler_trunk: With ``trainable_layers``, the learner continues from the
            hidden states the sampler's frozen layers computed instead of running them
            again (``model_config["reuse_sampler_trunk"]``).
        old_logp_source: ``ProxMOConfig.old_logp_source``.
        llm_env_configs: ``make_llm_env`` keywords per env id (an env not listed: the
            paper's prompt, history and think block).
        system_prompt: The system message of every prompt (``model_config["system_prompt"]``;
            None: the chat template's own default).
        held_answer_templates: Env ids whose answers the main job holds to the admissible
            commands by default (``model_config["constrain_to_admissible"]``, HF engine), each
            with the prompt template used then: the constraint enforces the action list, so
            the prompt leaves it out.
        warm_up_episodes: Expert episodes of the supervised warm start before RL (0: none).
        warm_up_epochs: Passes of the warm start over its demonstrations.
        warm_up_lr: Learning rate of the warm start.
        warm_up_max_turns: Turn limit of a demonstration episode (None: :attr:`max_turns`).
        warm_up_relabel_rounds: Rounds of on-policy relabelling (DAgger) in the warm start.
        warm_up_relabel_epochs: Passes over all turns after each relabelling round.
    """

    name: str
    model: str
    tasks_per_iteration: int
    group_size: int
    iterations: int
    max_turns: int | None
    max_new_tokens: int
    eval_temperature: float
    minibatch_size: int
    micro_batch_size: int
    dtype: str
    evaluation_interval: int
    checkpoint_every: int
    evaluation_num_tasks: int
    num_games: int | None
    task_types: tuple[str, ...] | None
    max_prompt_tokens: Mapping[str, int]
    lr: float
    trainable_layers: int | None
    reuse_sampler_trunk: bool
    old_logp_source: str
    llm_env_configs: Mapping[str, Mapping[str, Any]]
    system_prompt: str | None
    held_answer_templates: Mapping[str, str]
    warm_up_episodes: int
    warm_up_epochs: int
    warm_up_lr: float
    warm_up_max_turns: int | None
    warm_up_relabel_rounds: int
    warm_up_relabel_epochs: int

    def llm_env_config(self, env: str, *, held_answers: bool = False) -> dict[str, Any]:
        """``make_llm_env`` keywords of ``env`` at this scale (empty: the paper's defaults); with
        ``held_answers``, the prompt of :attr:`held_answer_templates` where it names one."""
        config = dict(self.llm_env_configs.get(env, {}))
        if held_answers and env in self.held_answer_templates:
            config["template"] = self.held_answer_templates[env]
        return config

    def model_config(self, env: str, model: str | None = None) -> dict[str, Any]:
        """The RLModule's model config for ``env`` at this scale (``model`` overrides :attr:`model`)."""
        config: dict[str, Any] = {
            "model_name_or_path": model or self.model,
            "dtype": self.dtype,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 1.0,
            "eval_temperature": self.eval_temperature,
        }
        if self.prompt_limit(env) is not None:
            config["max_prompt_tokens"] = self.prompt_limit(env)
        if self.system_prompt is not None:
            config["system_prompt"] = self.system_prompt
        if self.trainable_layers is not None:
            config["trainable_layers"] = self.trainable_layers
            if self.reuse_sampler_trunk:
                config["reuse_sampler_trunk"] = True
        return config

    def prompt_limit(self, env: str) -> int | None:
        """``model_config["max_prompt_tokens"]`` for ``env`` at this scale (None: unlimited)."""
        return self.max_prompt_tokens.get(env)


PAPER = Scale(
    name="paper",
    model=PAPER_MODEL,
    tasks_per_iteration=16,
    group_size=8,
    iterations=150,
    max_turns=None,
    max_new_tokens=512,
    # The release's validation temperature.
    eval_temperature=0.4,
    minibatch_size=256,
    micro_batch_size=8,
    dtype="bfloat16",
    evaluation_interval=5,
    # Minutes per iteration on GPUs; a checkpoint of a 1.5B model is ~18 GB.
    checkpoint_every=10,
    evaluation_num_tasks=128,
    num_games=None,
    task_types=None,
    # The release's prompt limits.
    max_prompt_tokens={ALFWORLD: 2048, WEBSHOP: 4096},
    lr=1e-6,
    trainable_layers=None,
    reuse_sampler_trunk=False,
    old_logp_source="recompute",
    llm_env_configs={},
    # The model's usual framing: the chat template writes its default system message.
    system_prompt=None,
    held_answer_templates={},
    warm_up_episodes=0,
    warm_up_epochs=2,
    warm_up_lr=1e-5,
    warm_up_max_turns=None,
    warm_up_relabel_rounds=0,
    warm_up_relabel_epochs=2,
)
CPU = Scale(
    name="cpu",
    model=CPU_MODEL,
    # Three task groups of four: a group needs a success and a failure for the advantage to be non-zero.
    tasks_per_iteration=3,
    group_size=4,
    iterations=2,
    # The searching expert wins 77 % of unseen pick/look games within 10 steps (62 % within 8).
    max_turns=10,
    max_new_tokens=24,
    # The release's: greedy decoding traps the 135M model in loops (docs/design.md, CPU default).
    eval_temperature=0.4,
    minibatch_size=8,
    micro_batch_size=4,
    dtype="float32",
    # The unseen split every 5 iterations: the curve shows whether what is learned transfers.
    evaluation_interval=5,
    # About 110 s per iteration (cpu-transfer-s7): at most 4 minutes lost to an interruption.
    checkpoint_every=2,
    # Enough unseen episodes that a change of 0.2 shows beyond the 95 % interval.
    evaluation_num_tasks=48,
    # Many rooms, so that the warm start and RL learn what transfers rather than four layouts.
    num_games=48,
    # The two task types whose searching expert mostly fits in 10 turns (docs/design.md, CPU default).
    task_types=("pick", "look"),
    max_prompt_tokens={},
    # Chosen by measurement on 2 cores (docs/design.md, benchmarks/results/cpu_default.md).
    lr=1e-4,
    trainable_layers=4,
    reuse_sampler_trunk=True,
    old_logp_source="sampler",
    llm_env_configs={ALFWORLD: {"template": "alfworld-compact", "history_length": 1, "require_think": False}},
    # An empty system message: SmolLM2's default one is 16 of a turn's ~150 prompt tokens.
    system_prompt="",
    # Half the prompt tokens, and twice the unseen wins of the warm start (docs/design.md, CPU default).
    held_answer_templates={ALFWORLD: "alfworld-unlisted"},
    warm_up_episodes=64,
    warm_up_epochs=4,
    warm_up_lr=5e-4,
    # Every demonstration played to the end of its task, past the 10 turns of an RL episode: cut at 10,
    # half of them stopped before the take, put or use that finishes it (docs/design.md, CPU default).
    warm_up_max_turns=30,
    warm_up_relabel_rounds=0,
    warm_up_relabel_epochs=2,
)
#: Env-config entries that switch an env's expert on for the warm start (other envs must
#: report ``info["expert_action"]`` by themselves).
EXPERT_ENV_CONFIGS: dict[str, dict[str, Any]] = {ALFWORLD: {"expert": "search"}}
SCALES = {scale.name: scale for scale in (PAPER, CPU)}

#: Held-out split each env evaluates on.
EVALUATION_SPLITS = {ALFWORLD: "unseen", WEBSHOP: "test"}


def env_configs(env: str, scale: Scale, overrides: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """Env configs of the training and the evaluation split of ``env`` at ``scale``.

    ALFWorld: ALFWorld's data with the release's 50-step limit at paper scale, else
    ``scale.num_games`` generated games of ``scale.task_types``; trains on "train",
    evaluates on "unseen".
    WebShop: the original catalogue with the release's binary reward
    (``reward="success"``: 1 for a perfect purchase, else 0) at paper scale, else a
    generated one of 200 products paying the fractional score (a small CPU model
    rarely buys perfectly, and the score still separates its rollouts); 15 steps;
    "train" and "test" goals; ``info["score"]`` reports the score either way.
    Other envs: ``overrides`` for both.
    """
    overrides = dict(overrides or {})
    if env == ALFWORLD:
        base: dict[str, Any] = {"max_steps": 50}
        base.update(
            {"data_source": "alfworld"}
            if scale.num_games is None
            else {"data_source": "generated", "num_games": scale.num_games}
        )
        if scale.task_types is not None:
            base["task_types"] = list(scale.task_types)
    elif env == WEBSHOP:
        base = {"max_steps": 15}
        base.update(
            {"catalog": "real", "small_data": True, "reward": "success"}
            if scale is PAPER
            else {"catalog": "generated", "num_products": 200, "reward": "score"}
        )
    else:
        return overrides, dict(overrides)
    train = {**base, **overrides}
    return train, {**train, "split": EVALUATION_SPLITS[env]}
