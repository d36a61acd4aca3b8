"""Time-to-error of the command lines for bad flags (issue 13, item 5).

Runs ``python -m rllib_proxmo.train`` and a tuned example with one bad flag each, in a
scratch directory (MLflow store, outputs and Ray's logs stay there), and prints a
Markdown table: case, seconds until the process exited (or the timeout), exit status,
and the last line of its error output.

    python benchmarks/cli_errors.py                       # this checkout
    python benchmarks/cli_errors.py --repo /other/checkout --timeout 90
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["-m", "rllib_proxmo.train", "--stop-iters", "1", "--no-mlflow"]
TUNE = ["tuned_examples/proxmo_alfworld.py", "--cpu", "--no-mlflow", "--no-tune", "--seeds", "0", "--stop-iters", "1"]

#: (case, arguments after the interpreter, extra environment variables)
CASES: list[tuple[str, list[str], dict[str, str]]] = [
    ("train --estimator ppo", [*TRAIN, "--estimator", "ppo"], {}),
    ("train --tau -1", [*TRAIN, "--tau", "-1"], {}),
    ("train --seed -1", [*TRAIN, "--seed", "-1"], {}),
    ("train --env NoSuch-v0", [*TRAIN, "--env", "NoSuch-v0"], {}),
    ("train --env nosuchmodule:Id", [*TRAIN, "--env", "nosuchmodule:Id"], {}),
    ("train --env-config typo", [*TRAIN, "--env-config", '{"num_game": 3}'], {}),
    ("train --llm-env-config typo", [*TRAIN, "--llm-env-config", '{"max_steps": 3}'], {}),
    ("train --model uncached hub id (offline)", [*TRAIN, "--model", "Qwen/Qwen2.5-0.5B-Instruct"], {}),
    ("train --model missing directory", [*TRAIN, "--model", "/nonexistent/model"], {}),
    ("train --num-gpus-per-learner 1 (no GPU)", [*TRAIN, "--num-gpus-per-learner", "1"], {}),
    ("train --address 127.0.0.1:1 (closed port)", [*TRAIN, "--address", "127.0.0.1:1"], {}),
    ("train --address 10.255.255.1:6379 (no host)", [*TRAIN, "--address", "10.255.255.1:6379"], {}),
    ("tune --estimators ppo", [*TUNE, "--estimators", "ppo"], {}),
    ("tune --model uncached hub id (offline)", [*TUNE, "--model", "Qwen/Qwen2.5-0.5B-Instruct"], {}),
    ("tune --num-gpus-per-learner 1 (no GPU)", [*TUNE, "--num-gpus-per-learner", "1"], {}),
    ("tune RAY_ADDRESS=127.0.0.1:1", TUNE, {"RAY_ADDRESS": "127.0.0.1:1"}),
]


def run_case(repo: Path, arguments: list[str], env_vars: dict[str, str], timeout: float, scratch: Path):
    """(seconds, exit status or None on timeout, last stderr line) of one command."""
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
        "RAY_TMPDIR": str(scratch / "ray"),
        **env_vars,
    }
    if "RAY_ADDRESS" not in env_vars:
        env.pop("RAY_ADDRESS", None)
    command = [sys.executable, *[str(repo / a) if a.endswith(".py") else a for a in arguments]]
    start = time.perf_counter()
    # A session of its own, so that a timeout ends the job and every Ray process it started.
    process = subprocess.Popen(
        command,
        cwd=scratch,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
        status = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        status = None
    return time.perf_counter() - start, status, _last_line(stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default this one)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is cut (default 60)")
    parser.add_argument("--cases", nargs="*", help="substrings selecting cases (default all)")
    args = parser.parse_args(argv)
    print(f"repo {args.repo.resolve()}, timeout {args.timeout:g} s\n")
    print("| case | seconds | exit | last line of stderr |\n| --- | --- | --- | --- |")
    for case, arguments, env_vars in CASES:
        if args.cases and not any(part in case for part in args.cases):
            continue
        with tempfile.TemporaryDirectory() as scratch:
            seconds, status, line = run_case(args.repo.resolve(), arguments, env_vars, args.timeout, Path(scratch))
        shown = "timeout" if status is None else str(status)
        print(f"| {case} | {seconds:.1f} | {shown} | {line.replace('|', '/')} |", flush=True)


if __name__ == "__main__":
    main()
