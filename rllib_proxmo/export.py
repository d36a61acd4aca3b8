"""Export a trained policy as a Hugging Face model directory.

``python -m rllib_proxmo.export CHECKPOINT OUT_DIR`` reads an algorithm checkpoint
(``algo.save()``, the main job's ``checkpoint/``, a Tune trial's checkpoint) and writes
the policy, with a LoRA adapter merged into its base, as ``config.json``,
``model.safetensors``, ``generation_config.json`` and the tokenizer files: a directory
that ``transformers`` loads with ``AutoModelForCausalLM.from_pretrained`` and vLLM
serves (``vllm serve OUT_DIR``). Weights are written in the checkpoint's compute dtype
(``model_config["dtype"]``, fp32 unless set).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

#: Where an algorithm checkpoint keeps the (single-agent) policy module.
MODULE_DIR = Path("learner_group", "learner", "rl_module", "default_policy")


def export_policy(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's policy to ``out_dir`` (created; must not exist or be empty).

    The directory is written next to ``out_dir`` first and renamed when complete.

    Raises:
        FileNotFoundError: when ``checkpoint`` holds no policy module.
        FileExistsError: when ``out_dir`` exists and is not empty.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rllib_proxmo.algorithm.torch.model_loading import save_policy_model

    module_dir = Path(checkpoint).expanduser().resolve() / MODULE_DIR
    if not module_dir.is_dir():
        raise FileNotFoundError(f"{checkpoint} is not an algorithm checkpoint: {MODULE_DIR} is missing")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    module = RLModule.from_checkpoint(module_dir, inference_only=True)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_policy_model(module, partial)
    if out_dir.exists():
        out_dir.rmdir()
    partial.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rllib_proxmo.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="algorithm checkpoint directory")
    parser.add_argument("out_dir", help="output directory (created; must not exist or be empty)")
    args = parser.parse_args(argv)
    try:
        out_dir = export_policy(args.checkpoint, args.out_dir)
    except (FileNotFoundError, FileExistsError) as error:
        parser.error(str(error))
    print(f"exported the policy of {args.checkpoint} to {out_dir}")


if __name__ == "__main__":
    main()
