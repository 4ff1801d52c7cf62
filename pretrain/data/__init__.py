"""Data sets, augmentation (t1 / t2, on the CPU or the device), sampling and loaders."""
