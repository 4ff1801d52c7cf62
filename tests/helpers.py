"""Small helpers shared by the test files (imported as ``helpers``: tests/ is on sys.path)."""

# The settings every tiny CPU pretraining run of the tests shares: a width-4 network with small
# heads, batches of 64, no warm-up, no loader workers.
TINY_CPU_RUN = {
    "MODEL.WIDTH": 4,
    "MODEL.HIDDEN_DIM": 32,
    "MODEL.OUT_DIM": 16,
    "SOLVER.BATCH_SIZE": 64,
    "SOLVER.WARMUP_EPOCHS": 0,
    "DATA.NUM_WORKERS": 0,
    "DEVICE": "cpu",
}


def overrides(*settings: dict) -> list:
    """The KEY VALUE list the tools take, from dicts merged left to right: {"A.B": 4} -> ["A.B", "4"]."""
    merged = {}
    for part in settings:
        merged.update(part)
    return [text for key, value in merged.items() for text in (key, str(value))]
