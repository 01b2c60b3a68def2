"""A tiny plan run through the real runner, for the fault tests (run as a subprocess, killed at will).

    python tests/_fault_child.py RESULTS RUN[,RUN...]

Runs are tiny ddmlp runs (one 64-unit hidden layer, 512 samples, 20 epochs) named by the
arguments. Every epoch end appends `RUN STEPS` to $REPRODUCE_PROGRESS, and every training start
appends `start RUN`, so the test can count work done and work repeated.
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one
torch.set_num_threads(1)

from reproduce import runner  # noqa: E402
from reproduce.engine import TrainSpec, log_schedule  # noqa: E402
from reproduce.experiments import ddmlp  # noqa: E402

SPEC = TrainSpec(optimizer="adam", lr=1e-3, batch_size=32, epochs=20, checkpoints=log_schedule(20, first=0.1))
EPOCH_STEPS = 512 // 32


def tiny(name: str) -> ddmlp.Run:
    return ddmlp.Run(name, (64,), "fashion_mnist", 0.3, SPEC, n_train=512, n_test=256)


def main(results: str, names: str) -> None:
    ddmlp.runs = lambda tier, seed=0: [tiny(n) for n in names.split(",")]
    log_path = os.environ.get("REPRODUCE_PROGRESS", os.devnull)
    execute = ddmlp.execute

    def logged(run, device, state_path=None, progress=None):
        with open(log_path, "a") as f:
            f.write(f"start {run.name}\n")

        def tick(n: int) -> None:
            with open(log_path, "a") as f:
                f.write(f"{run.name} {n}\n")

        return execute(run, device, state_path=state_path, progress=tick)

    ddmlp.execute = logged
    runner.make_results("quick", ["ddmlp"], Path(results), progress=False, log=lambda message: None)


if __name__ == "__main__":
    main(*sys.argv[1:3])
