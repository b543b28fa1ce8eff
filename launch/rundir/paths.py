"""Every path of a run directory, named once.

    RUN_DIR/
        config.json  summary.json  counts.json  learner.json  actor_<i>.json
        restarts.jsonl  resumes.json  rae.json  learning_curve.png  (SLURM: jobs.jsonl)
        metrics/  tensorboard/  checkpoints/  checkpoints.damaged/  experience/
        logs/[launch_<k>/]<group>/<index>
        launches/<k>/   program.pkl  cluster.json  coordinator  supervision.json
                        counter_state.json  (SLURM: job.json  job*.sbatch  job_id  job_started)

Only the node that owns a file writes it (the counter: counts, summary, restarts; the
learner: checkpoints, learner.json; each actor: its experience and actor_<i>.json).
"""

import dataclasses
import datetime
import os

# What launch k hands its node processes (RUN_DIR/launches/<k>/...).
PROGRAM_FILE = "program.pkl"
CLUSTER_FILE = "cluster.json"
COORDINATOR_FILE = "coordinator"
SUPERVISION_FILE = "supervision.json"
COUNTER_STATE_FILE = "counter_state.json"
JOB_FILE = "job.json"
JOB_SCRIPT_FILE = "job.sbatch"
JOB_ID_FILE = "job_id"
JOB_STARTED_FILE = "job_started"


def timestamp() -> str:
    """UTC time to the microsecond, e.g. 20261202T072356151084Z: new run directories and outputs."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The paths of the run directory `root`."""

    root: str

    def file(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def config(self) -> str:
        return self.file("config.json")

    @property
    def summary(self) -> str:
        return self.file("summary.json")

    @property
    def counts(self) -> str:
        """The counter's totals, saved while the run goes and at its stop."""
        return self.file("counts.json")

    @property
    def restarts(self) -> str:
        return self.file("restarts.jsonl")

    @property
    def jobs(self) -> str:
        """A SLURM run's jobs, one after another (`launch.runtime.slurm`): one line per event."""
        return self.file("jobs.jsonl")

    @property
    def resumes(self) -> str:
        return self.file("resumes.json")

    @property
    def rae(self) -> str:
        return self.file("rae.json")

    @property
    def learning_curve(self) -> str:
        return self.file("learning_curve.png")

    def node_totals(self, node: str) -> str:
        """A node's totals at its exit: learner.json, actor_<i>.json."""
        return self.file(f"{node}.json")

    def logs_dir(self, launch_index: int = 0) -> str:
        """Where the nodes' output goes: RUN_DIR/logs, and RUN_DIR/logs/launch_<k> for the k-th
        resume (an earlier launch's logs are kept)."""
        base = os.path.join(os.path.abspath(self.root), "logs")
        return base if launch_index == 0 else os.path.join(base, f"launch_{launch_index}")

    def node_log(self, launch_index: int, label: str, index: int) -> str:
        return os.path.join(self.logs_dir(launch_index), label, str(index))

    def latest_launch_dir(self):
        """RUN_DIR/launches/<k> of the run's newest launch (None before its first)."""
        launches = os.path.join(os.path.abspath(self.root), "launches")
        indices = [int(name) for name in os.listdir(launches) if name.isdigit()] if os.path.isdir(launches) else []
        return self.launch_dir(max(indices)) if indices else None

    def launch_dir(self, launch_index: int = 0) -> str:
        """What a launch hands its node processes (the pickled program, the cluster spec, the
        counter's address), and a SLURM launch's job script: RUN_DIR/launches/<k>."""
        return os.path.join(os.path.abspath(self.root), "launches", str(launch_index))


def run_dir_of_launch(launch_dir: str) -> str:
    """RUN_DIR of RUN_DIR/launches/<k>."""
    return os.path.dirname(os.path.dirname(os.path.abspath(launch_dir)))
