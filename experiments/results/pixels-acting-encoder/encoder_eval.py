"""Greedy returns of a pixel run's checkpoints, acting with the target critic's encoder and with
the online one (the policy is the same). Usage, from the repository root:

    PYTHONPATH=. .venv/bin/python experiments/results/pixels-acting-encoder/encoder_eval.py RUN_DIR STEP [STEP ...]
"""

import sys

import numpy as np

from experiments import evaluate

run = sys.argv[1]
for step in sys.argv[2:]:
    config, loaded = evaluate.load_run(run, step)
    state = loaded.state
    for name, encoder_from in (("target encoder", "target_critic_params"), ("online encoder", "critic_params")):
        # Actors take the encoder of critic_params (Networks.acting_params): put the chosen one there.
        acting_state = {**state, "critic_params": {**state["critic_params"], "encoder": state[encoder_from]["encoder"]}}
        returns = np.asarray(evaluate.evaluate(config, acting_state, episodes=10, seed=123)[0])
        print(f"step {step} {name}: {returns.mean():.1f} ± {returns.std():.1f}", flush=True)
