"""Learner tokens per second of SmolLM2-135M on this machine: which weights to train on a CPU.

Side by side in one run, on the same (B, L) batch of random token ids: a no-grad forward
pass, and forward + backward of the response log-probs for full fine-tuning, the top
N decoder layers (``model_config["trainable_layers"]``) and LoRA on every linear layer
(``model_config["lora"]``). Prints tokens/s and the ratio to full fine-tuning; the CPU
default trains the top 4 layers because its backward stops there.

    python benchmarks/learner_throughput.py --json benchmarks/results/learner_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm
from rllib_proxmo.experiments.scale import CPU

LORA_EVERY_LINEAR = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=CPU.model)
    parser.add_argument("--batch", type=int, default=4, help="rows per pass")
    parser.add_argument("--length", type=int, default=400, help="tokens per row (a compact ALFWorld prompt)")
    parser.add_argument("--response", type=int, default=8, help="scored response tokens per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (after one warm-up)")
    parser.add_argument("--top-layers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def tokens_per_s(module: LLMRLModule, batch: dict, backward: bool, repeats: int) -> float:
    """Input tokens per second of ``repeats`` passes (forward, plus backward of the mean log-prob)."""
    tokens = batch["input_ids"].numel()
    timings = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        if backward:
            module.forward_train(batch)["token_logp"].mean().backward()
            module.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                module.forward_inference(batch)
        timings.append(time.perf_counter() - start)
    return tokens * repeats / sum(timings[1:])


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    _, tokenizer = load_causal_lm(args.model)
    ids = torch.randint(100, tokenizer.vocab_size - 1, (args.batch, args.length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "scored_tokens": args.response}
    variants = {"full fine-tuning": {}, **{f"top {n} layers": {"trainable_layers": n} for n in args.top_layers}}
    variants["LoRA r=8, every linear"] = {"lora": LORA_EVERY_LINEAR}
    rows = {}
    full = LLMRLModule(model_config={"model_name_or_path": args.model}, inference_only=False)
    rows["forward only (no grad)"] = tokens_per_s(full, batch, backward=False, repeats=args.repeats)
    for name, extra in variants.items():
        module = (
            full
            if not extra
            else LLMRLModule(model_config={"model_name_or_path": args.model, **extra}, inference_only=False)
        )
        rows[name] = tokens_per_s(module, batch, backward=True, repeats=args.repeats)
        print(f"{name:<26} {rows[name]:7.0f} tokens/s", flush=True)
    base = rows["full fine-tuning"]
    print(f"\n{args.batch} x {args.length} tokens, {torch.get_num_threads()} threads")
    print("| variant | tokens/s | vs full fine-tuning |\n|---|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.0f} | {value / base:.2f}x |")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "tokens_per_s": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
