"""Launchpad programs: the nodes of a Relay experiment and how they are wired."""
