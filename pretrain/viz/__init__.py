"""Presentation: metric plots, the augmentation grid and the demo table."""
