import sys, numpy as np
from experiments import evaluate
run = sys.argv[1]
for step in sys.argv[2:]:
    config, loaded = evaluate.load_run(run, step)
    state = dict(loaded.state)
    for name, encoder_from in (("target encoder", "target_critic_params"), ("online encoder", "critic_params")):
        s = dict(state); s["target_critic_params"] = state[encoder_from]
        out = evaluate.evaluate(config, s, episodes=10, seed=123)
        returns = np.asarray(out[0] if isinstance(out, tuple) else out)
        print(f"step {step} {name}: {returns.mean():.1f} ± {returns.std():.1f}", flush=True)
