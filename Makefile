# The two commands a fresh machine needs: 'make run' and 'make test'.
# Each sets up .venv first when needed ('make setup'; re-running it is a no-op).

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relay-installed
SETUP_INPUTS := setup.py requirements/constraints.txt requirements/gpu.txt scripts/setup_venv.sh \
	scripts/verify_install.py scripts/install_cluster_tools.sh scripts/check_gpu_install.py

.PHONY: setup test test-all run bench clean-venv

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup_venv.sh
	bash scripts/install_cluster_tools.sh
	$(PY) scripts/check_gpu_install.py
	touch $(STAMP)

# The default test run (at most 15 min of pytest on 2 cores); tests marked 'slow' are left out.
test: setup
	$(PY) -m pytest

# Everything, slow tests included.
test-all: setup
	$(PY) -m pytest -m "slow or not slow"

# The main job: MPO learns cartpole:swingup (swings the pole up and balances it) with 2 actors
# in 120k env steps (about 5.5 minutes on 2 cores: experiments/results/make-run/). Outputs under
# runs/cartpole_swingup/mpo/.
run: setup
	$(PY) -m experiments.train --agent=mpo --preset=small --env=cartpole:swingup --num_actors=2 --max_env_steps=120000

bench: setup
	$(PY) -m experiments.bench env --env=walker:walk
	$(PY) -m experiments.bench learner
	$(PY) -m experiments.bench actor --env=walker:walk
	$(PY) -m experiments.bench datapath --agent=mog
	$(PY) -m experiments.bench scaling --env=walker:walk --num_actors=1,2,4

clean-venv:
	rm -rf $(VENV)
