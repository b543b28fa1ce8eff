"""Learners (MPO, DMPO, mixture-critic MPO) in pure JAX.

Imports nothing of TensorFlow, Reverb or Launchpad, so that it runs unchanged on
any accelerator image with a recent JAX.
"""
