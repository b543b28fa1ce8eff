"""The three learners' metrics after 3 updates on fixed inputs, every value's float32 bits (the house change's before/after check)."""
import json, sys
import jax, numpy as np
import agents

def batch(seed, obs_dim=5, act_dim=2, b=32):
    rng = np.random.default_rng(seed)
    return agents.Transition(
        observation=rng.normal(size=(b, obs_dim)).astype(np.float32),
        action=rng.uniform(-1, 1, (b, act_dim)).astype(np.float32),
        reward=rng.uniform(0, 1, (b,)).astype(np.float32),
        discount=np.full((b,), 0.95, np.float32),
        next_observation=rng.normal(size=(b, obs_dim)).astype(np.float32))

out = {}
for agent in ("mpo", "dmpo", "mog"):
    config = agents.make_config(agent, policy_layer_sizes=(64, 64), critic_layer_sizes=(64, 64), num_samples=8)
    learner = agents.Learner(config, 5, 2)
    state = learner.init(jax.random.PRNGKey(0))
    rows = []
    for step in range(3):
        state, metrics = learner.update(state, batch(step))
        rows.append({k: np.float32(v).view(np.uint32).item() for k, v in jax.device_get(metrics).items()})
    out[agent] = rows
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
print({a: {k: float(np.uint32(v).view(np.float32)) for k, v in rows[-1].items() if "loss" in k} for a, rows in out.items()})
