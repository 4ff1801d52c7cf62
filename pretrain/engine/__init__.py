"""The training loop, optimizer, schedules, checkpoints and the kNN monitor."""
