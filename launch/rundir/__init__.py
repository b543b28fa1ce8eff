"""What a run leaves on disk: its paths (named once, `paths`), JSON files, metrics,
checkpoints and summary. Every node and command that reads or writes a run directory
goes through here."""
