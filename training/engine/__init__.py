"""The training engine: one run's pipeline (train, distil, prune), its loop, state, losses and distributed set-up."""
