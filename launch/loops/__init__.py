"""The loops nodes, benchmarks and tests drive: the actor's, the learner's, and whole episodes.
Nothing here knows Launchpad."""
