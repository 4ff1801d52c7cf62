"""The run record every benchmark script writes (benchmarks/common.py)."""

import time

from benchmarks.common import new_run

MACHINE = {"cpu_model": "test cpu", "cpu_cores": 2, "gpu": "none", "device": "cpu"}


def test_a_run_record_names_machine_settings_and_results_and_its_key_ignores_the_length():
    start = time.perf_counter()
    short = new_run(MACHINE, {"batch": 8, "steps": 5}, [1.0], start, ignore=("steps",))
    longer = new_run(MACHINE, {"batch": 8, "steps": 50}, [2.0], start, ignore=("steps",), extra=3)
    other = new_run(MACHINE, {"batch": 16, "steps": 5}, [1.0], start, ignore=("steps",))
    assert short["key"] == longer["key"] != other["key"]  # a longer rerun replaces the same setting
    assert short["machine"] == MACHINE and short["params"] == {"batch": 8, "steps": 5}
    assert short["results"] == [1.0] and short["wall_s"] >= 0 and short["command"]
    assert longer["extra"] == 3 and list(longer)[-2:] == ["results", "wall_s"]
