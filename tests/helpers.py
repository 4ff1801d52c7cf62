"""Small helpers shared by the test files (imported as ``helpers``: tests/ is on sys.path)."""

import torch

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


def randomise_bn(model):
    """Non-trivial running statistics, so equality checks exercise the BatchNorm mapping."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(
                torch.randn(module.running_mean.shape, generator=generator) * 0.1
            )
            module.running_var.copy_(
                torch.rand(module.running_var.shape, generator=generator) + 0.5
            )
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
    return model
