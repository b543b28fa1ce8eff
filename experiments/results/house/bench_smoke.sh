#!/usr/bin/env bash
# Every benchmark command, each with small settings, as a check that it runs after the layout
# change; exit codes and wall times go to stdout (experiments/results/house/bench_smoke.txt).
set -u
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs/bench/smoke-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUT"
B=".venv/bin/python -m experiments.bench"
ONLY=${ONLY:-}  # e.g. ONLY="actor scaling": just those
run() {
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local start=$(date +%s)
  $B "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - start )) s: bench $*"
}
run env env --env=cartpole:swingup --steps_per_block=500 --blocks=2 --out=$OUT/env.json
run learner learner --agent=mpo --batch=32 --steps_per_call=1 --rounds=1 --min_steps=5 --out=$OUT/learner.json
run actor actor --env=cartpole:swingup --envs_per_actor=1 --max_env_steps=3000 --out=$OUT/actor.json
run actor_costs actor_costs --env=cartpole:swingup --envs_per_actor=1 --steps_per_block=200 --blocks=2 --out=$OUT/actor_costs.json
run scaling scaling --env=cartpole:swingup --num_actors=1 --max_env_steps=3000 --out=$OUT/scaling.json
run datapath datapath --agent=mpo --env=cartpole:swingup --episodes=2 --steps_per_block=10 --blocks=2 --out=$OUT/datapath.json
run multinode multinode --env=cartpole:swingup --num_actors=1 --max_env_steps=3000 --rounds=1 --steps=20 --out=$OUT/multinode.json
run learning learning --agents=mpo --env=cartpole:swingup --max_env_steps=3000 --seeds=0 --preset=debug --random_episodes=1 --out_dir=$OUT/learning
run rae rae --source="$(ls -d runs/bench/learning-cartpole_swingup-*-runs/mpo-s0 | tail -1)" --agent=mpo --env=cartpole:swingup --seed=1 --max_env_steps=3000 --preset=debug --out_dir=$OUT/rae
run faults faults --nodes=actor/1 --kill_at=1500 --max_env_steps=12000 --out=$OUT/faults.json
run chaos chaos --max_env_steps=16000 --warmup=2000 --kills=3 --kill_every_s=8 --skip_baseline --out=$OUT/chaos.json
run replay_frames replay_frames --sizes=32 --items=200 --chunk_lengths=4 --pool=8 --episode_steps=50 --batch_size=16 --blocks=2 --batches_per_block=2 --record_steps=50 --out=$OUT/replay_frames.json
