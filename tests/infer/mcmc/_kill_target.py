"""A sampling run that a test kills with SIGKILL mid-way (run as a script) and then resumes."""

from __future__ import annotations

import sys
import time

import torch

from bayesdl.infer.mcmc import SGHMC, sample
from tests.infer.mcmc._targets import ConjugateRegression

NUM_SAMPLES, WARMUP, THIN = 300, 100, 2


def run(checkpoint, store, *, slow: bool = False, resume: bool = False):
    target = ConjugateRegression.make(n=400)
    potential = target.potential()
    if slow:
        fn = potential.fn

        def slowed(z, batch):
            time.sleep(0.004)  # leave the killer time to strike mid-run; numbers unchanged
            return fn(z, batch)

        potential.fn = slowed
    return sample(
        potential,
        SGHMC(step_size=1e-4, friction=0.2),
        (target.x, target.y),
        num_samples=NUM_SAMPLES,
        warmup=WARMUP,
        thin=THIN,
        num_chains=3,
        batch_size=100,
        seed=7,
        checkpoint=checkpoint,
        checkpoint_every=25,
        resume=resume,
        store=store,
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], sys.argv[2], slow=True)
