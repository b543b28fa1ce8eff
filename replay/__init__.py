"""Reverb replay tables, adders and the learner's data pipeline."""
