"""Stop requests from the scheduler: SIGTERM and SIGUSR1 make the run save at the next step boundary and exit.

SLURM sends SIGUSR1 ahead of a time limit when asked (``#SBATCH --signal=USR1@120``) and SIGTERM
when it preempts or cancels a job; torchrun forwards SIGTERM to its workers. The handler only
records the request; the training loop polls :meth:`StopRequest.requested` after each step, saves a
checkpoint and ends with :data:`EXIT_PREEMPTED`, so a requeued job continues with ``--resume``.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import torch

from pretrain.utils import distributed as comm

# Exit status of a run that saved and stopped on request (EX_TEMPFAIL: "try again later").
EXIT_PREEMPTED = 75
STOP_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s
)


class StopRequest:
    """Records SIGTERM / SIGUSR1 while installed; all processes agree on the request at each poll."""

    def __init__(self):
        self.signal_number: Optional[int] = None
        self._previous = {}

    def install(self) -> "StopRequest":
        if (
            threading.current_thread() is threading.main_thread()
        ):  # signals can only be caught there
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number, _frame) -> None:
        self.signal_number = number

    def requested(self, device: torch.device) -> bool:
        """True on every process when any process got a stop signal (one small all-reduce with several)."""
        local = self.signal_number is not None
        if comm.get_world_size() == 1:
            return local
        return bool(comm.all_reduce_sum(torch.tensor([float(local)], device=device)).item() > 0)

    @property
    def signal_name(self) -> str:
        return (
            signal.Signals(self.signal_number).name
            if self.signal_number is not None
            else "a peer's signal"
        )
