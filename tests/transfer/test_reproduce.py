"""tools/reproduce.py: tables and rows, mean +- std, dry run, a real killed-and-restarted runner, SLURM via submitit."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_CPU_RUN, overrides

from pretrain.cli import EXIT_USER_ERROR, run_main
from pretrain.config import ConfigError, load_config
from transfer import reproduce
from transfer.reproduce import RowError, build_plan, collect, format_markdown, mean_curve, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "reproduce.py")
# A few steps of a width-4 ResNet-18 on digits, a checkpoint every step (so a killed run has one to resume).
TINY = overrides(
    TINY_CPU_RUN,
    {"SOLVER.MAX_STEPS": 6, "KNN.PERIOD": 1, "KNN.STEP_PERIOD": 0, "CHECKPOINT.STEP_PERIOD": 1},
)
ROWS, SEEDS = ("byol_aa", "msr_decay"), (0, 1)


def _tool():
    spec = importlib.util.spec_from_file_location("reproduce_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lincls_protocol(folder) -> str:
    """digits.yaml shortened to 2 epochs."""
    path = os.path.join(folder, "lincls_2ep.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            f"_BASE_: {os.path.join(ROOT, 'configs', 'lincls', 'digits.yaml')}\n"
            "LINCLS:\n  EPOCHS: 2\n  MILESTONES: [1]\n"
        )
    return path


def _argv(root, lincls, rows=ROWS, seeds=SEEDS, extra=()):
    return [
        "--table",
        "1",
        "--cfg",
        "digits_demo.yaml",
        "--rows",
        ",".join(rows),
        "--seeds",
        *map(str, seeds),
        "--lincls",
        lincls,
        *extra,
        *TINY,
        "OUTPUT_DIR",
        str(root),
    ]


def _wait_for(predicate, proc, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the runner ended before the moment the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------- pure parts
def test_summarize_is_mean_and_sample_std():
    stats = summarize([1, 2, 4])
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(7 / 3)
    assert stats["std"] == pytest.approx(
        math.sqrt(7 / 3)
    )  # sum of squared deviations 14/3, over n - 1 = 2
    assert summarize([5.0]) == {"mean": 5.0, "std": None, "n": 1}
    assert summarize([]) == {"mean": None, "std": None, "n": 0}
    assert reproduce.format_summary(summarize([1, 2, 4]), 3) == "2.3 ± 1.5 (n=3)"
    assert reproduce.format_summary(summarize([5.0]), 3) == "5.0 (n=1 of 3, rest pending)"
    assert reproduce.format_summary(summarize([]), 3) == "pending"


def test_mean_curve_averages_each_step_over_the_seeds_that_have_it():
    steps, mean, std = mean_curve([[[0, 10.0], [5, 20.0]], [[0, 14.0], [5, 30.0], [9, 1.0]]])
    assert steps == [0, 5, 9] and mean == pytest.approx([12.0, 25.0, 1.0])
    assert std == pytest.approx([math.sqrt(8), math.sqrt(50), 0.0])


def test_seeds_end_where_the_overrides_begin():
    argv = reproduce.normalize_seed_args(
        ["--table", "1", "--seeds", "0", "1", "2", "SOLVER.MAX_STEPS", "3"]
    )
    assert argv == ["--table", "1", "--seeds", "0,1,2", "SOLVER.MAX_STEPS", "3"]
    args = _tool().parse_args(["--seeds", "3", "4", "KNN.PERIOD", "0", "--table", "8"])
    assert (
        reproduce.parse_seeds(args.seeds) == [3, 4]
        and args.opts == ["KNN.PERIOD", "0"]
        and args.table == "8"
    )


def test_rows_resolve_to_the_paper_settings_and_user_overrides_win():
    plan = build_plan(1, "digits_demo.yaml", [0], opts=["SOLVER.MAX_STEPS", "3"])
    fixed = load_config("digits_demo.yaml", plan.row_opts("msr_fixed", 4))
    assert (fixed.METHOD.NAME, fixed.MSR.BETA_SCHEDULE, fixed.MSR.BETA_BASE, fixed.SEED) == (
        "msr",
        "constant",
        0.5,
        4,
    )
    aw = load_config("digits_demo.yaml", plan.row_opts("byol_aw", 0))
    assert (aw.METHOD.NAME, aw.METHOD.VIEWS, aw.SOLVER.MAX_STEPS) == ("byol", "AW", 3)
    main = build_plan(2, "digits_demo.yaml", [0], opts=["MSR.BETA_BASE", "0.2"])
    decay = load_config("digits_demo.yaml", main.row_opts("msr_decay", 0))
    assert (decay.MSR.BETA_SCHEDULE, decay.MSR.BETA_BASE) == (
        "cosine",
        0.2,
    )  # the config's own beta_base
    assert (
        load_config(
            "digits_demo.yaml", build_plan(2, "digits_demo.yaml", [0]).row_opts("msr_decay", 0)
        ).MSR.BETA_BASE
        == 0.3
    )
    assert [r.name for r in reproduce.TABLES[8].rows] == ["simsiam", "simsiam_msr"]
    assert "SimCLR" in reproduce.TABLES[2].description and "MoCo" in reproduce.TABLES[2].description


def test_rows_are_selected_by_name_and_unknown_names_list_the_valid_ones(capsys):
    plan = build_plan(1, "digits_demo.yaml", [0], rows="msr_decay, byol_aa")
    assert plan.rows == ("byol_aa", "msr_decay")  # the table's order
    with pytest.raises(RowError, match="valid rows: byol_aa, byol_aw, msr_fixed, msr_decay"):
        build_plan(1, "digits_demo.yaml", [0], rows="byol_aa,simclr")
    with pytest.raises(RowError, match="Tables: 1, 2, 8"):
        build_plan(3, "digits_demo.yaml", [0])
    tool = _tool()
    assert (
        run_main(tool.main, tool.parse_args(["--table", "2", "--rows", "byol_aw", "--dry-run"]))
        == EXIT_USER_ERROR
    )
    assert "valid rows: simsiam, byol_aa, msr_decay" in capsys.readouterr().err


def test_output_dir_is_the_runners_root_and_seed_comes_from_seeds(tmp_path):
    plan = build_plan(
        1, "digits_demo.yaml", [0, 1], opts=["OUTPUT_DIR", str(tmp_path / "r"), "KNN.PERIOD", "2"]
    )
    assert plan.root == str(tmp_path / "r") and plan.opts == ("KNN.PERIOD", "2")
    assert "OUTPUT_DIR" not in plan.row_opts("byol_aa", 1)
    assert plan.run_dir("byol_aa", 1) == str(tmp_path / "r" / "byol_aa" / "seed1")
    default = build_plan(8, "digits_demo.yaml", [0])
    assert default.root == os.path.abspath(
        os.path.join("output", "reproduce", "table8_digits_demo")
    )
    assert default.lincls == "digits.yaml"  # the default protocol of DATA.NAME digits
    with pytest.raises(ConfigError, match="--seeds"):
        build_plan(1, "digits_demo.yaml", [0], opts=["SEED", "3"])


def test_several_processes_per_run_go_through_torchrun():
    plan = build_plan(8, "digits_demo.yaml", [0], nproc=2)
    cmd = reproduce.tool_command(plan, "lincls.py", ["ckpt.pth", "--resume"])
    assert cmd[:7] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        os.path.join(ROOT, "tools", "lincls.py"),
    ] and cmd[7:] == ["ckpt.pth", "--resume"]
    assert reproduce.tool_command(build_plan(8, "digits_demo.yaml", [0]), "pretrain.py", [])[
        1:
    ] == [os.path.join(ROOT, "tools", "pretrain.py")]
    assert "--nproc-per-node 2" in reproduce.dry_run_text(plan)


def test_dry_run_prints_one_command_per_run_plus_references_and_collect(tmp_path, capsys):
    tool = _tool()
    root = tmp_path / "never_written"
    args = tool.parse_args(
        [
            "--table",
            "1",
            "--cfg",
            "digits_demo.yaml",
            "--seeds",
            "0",
            "1",
            "2",
            "--dry-run",
            "SOLVER.MAX_STEPS",
            "3",
            "OUTPUT_DIR",
            str(root),
        ]
    )
    assert run_main(tool.main, args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    runs = [line for line in lines if "--only runs" in line]
    assert len(runs) == 12 and len(lines) == 14
    for row in ("byol_aa", "byol_aw", "msr_fixed", "msr_decay"):
        for seed in (0, 1, 2):
            assert sum(f"--rows {row} --seeds {seed} --only runs" in line for line in runs) == 1
    assert all(line.endswith(f"SOLVER.MAX_STEPS 3 OUTPUT_DIR {root}") for line in lines)
    assert sum("--only references" in line for line in lines) == 1
    assert sum("--seeds 0 1 2 --only collect" in line for line in lines) == 1
    assert not root.exists()  # nothing was run or written


def test_paper_numbers_appear_only_where_the_paper_has_them(tmp_path):
    plan = build_plan(2, "in100_100ep.yaml", [0], opts=["OUTPUT_DIR", str(tmp_path)])
    assert plan.lincls == "mean_shift.yaml"
    results = collect(plan)  # nothing has run: every row pending, no data read
    assert [p["linear_top1"] for p in results["rows"][2]["paper"]] == [83.7, 85.5]
    text = format_markdown(results)
    assert "| msr_decay: MSR" in text and "83.7 (100 ep) / 85.5 (200 ep)" in text
    assert (
        "| simsiam: SimSiam (two fully aggressive views) | pending | pending | - | - | not available here |"
        in text
    )
    cifar = format_markdown(
        collect(build_plan(1, "cifar10_200ep.yaml", [0], opts=["OUTPUT_DIR", str(tmp_path)]))
    )
    assert "paper linear top-1" in cifar and "not available here" in cifar and "83.7" not in cifar


# ---------------------------------------------------------------- a real runner, killed and restarted
@pytest.fixture(scope="module")
def killed_and_restarted(tmp_path_factory):
    """Table 1, 2 rows x 2 seeds on digits: the runner is SIGKILLed during a run's pretraining, then restarted."""
    folder = tmp_path_factory.mktemp("reproduce")
    root, lincls = folder / "root", _lincls_protocol(str(folder))
    cmd = [sys.executable, TOOL, *_argv(root, lincls)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first_result = root / "byol_aa" / "seed0" / "result.json"
    killed_dir = root / "byol_aa" / "seed1" / "pretrain"
    with open(folder / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: (killed_dir / "checkpoint_0000001.pth").exists(), proc)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
    killed_mid_run = not (killed_dir / "checkpoint_0000006.pth").exists()
    first_mtime = first_result.stat().st_mtime_ns
    restart = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]
    return {
        "root": root,
        "restart": restart.stdout,
        "first_mtime": first_mtime,
        "killed_mid_run": killed_mid_run,
        "first_log": (folder / "first.log").read_text(),
        "lincls": lincls,
    }


def test_restarted_runner_skips_finished_runs_and_resumes_the_killed_one(killed_and_restarted):
    run = killed_and_restarted
    root = run["root"]
    assert "== Table 1, byol_aa, seed 0" in run["first_log"]
    assert "== Table 1, byol_aa, seed 0" not in run["restart"]  # finished before the kill: skipped
    assert (root / "byol_aa" / "seed0" / "result.json").stat().st_mtime_ns == run["first_mtime"]
    assert "== Table 1, byol_aa, seed 1" in run["restart"]
    assert run["killed_mid_run"]
    with open(root / "byol_aa" / "seed1" / "pretrain.log", encoding="utf-8") as handle:
        log = handle.read()
    assert (
        log.count("=== ") == 2 and "Resumed from" in log
    )  # the second attempt continued from a checkpoint
    for row in ROWS:
        for seed in SEEDS:
            assert (root / row / f"seed{seed}" / "result.json").is_file()
    assert (root / "references" / "raw_pixels.json").is_file() and (
        root / "references" / "init.json"
    ).is_file()


def test_results_json_holds_every_run_and_its_mean_and_std(killed_and_restarted):
    root = killed_and_restarted["root"]
    with open(root / "results.json", encoding="utf-8") as handle:
        results = json.load(handle)
    assert (
        results["table"] == 1
        and results["config"] == "digits_demo.yaml"
        and results["seeds"] == [0, 1]
    )
    assert [row["name"] for row in results["rows"]] == list(ROWS)
    for row in results["rows"]:
        assert [r["seed"] for r in row["runs"]] == list(SEEDS) and row["pending_seeds"] == []
        for run in row["runs"]:
            assert set(run) >= {"seed", "knn_top1", "linear_top1", "linear_best_top1", "output_dir"}
            assert run["output_dir"] == str(root / row["name"] / f"seed{run['seed']}")
            with open(os.path.join(run["output_dir"], "result.json"), encoding="utf-8") as handle:
                result = json.load(handle)
            knn_lines = [
                json.loads(line)
                for line in open(os.path.join(run["output_dir"], "pretrain", "metrics.jsonl"))
                if "knn_top1" in line
            ]
            assert result["knn_top1"] == knn_lines[-1]["knn_top1"] and knn_lines[-1]["step"] == 6
            assert [p[0] for p in result["knn_curve"]] == [
                0,
                6,
            ]  # KNN.AT_START of digits_demo, then the end
            lincls = [
                json.loads(line)
                for line in open(os.path.join(run["output_dir"], "lincls", "metrics.jsonl"))
            ]
            assert result["linear_top1"] == lincls[-1]["test_top1"] and result["linear_epochs"] == 2
            assert result["linear_best_top1"] == max(r["test_top1"] for r in lincls)
            assert (
                run["knn_top1"] == result["knn_top1"]
                and run["linear_top1"] == result["linear_top1"]
            )
        for key in ("knn_top1", "linear_top1"):
            assert row[key] == pytest.approx(summarize(r[key] for r in row["runs"]))
            assert row[key]["n"] == 2 and row[key]["std"] is not None
    raw, init = results["references"]
    assert (
        raw["name"] == "raw_pixels"
        and 80 < raw["knn_top1"] <= 100
        and 80 < raw["linear_top1"] <= 100
    )
    assert (
        init["name"] == "init"
        and 0 < init["knn_top1"] < 100
        and init["knn_source"].startswith("checkpoint")
    )
    assert init["step"] == 0 and "linear_top1" in init
    assert results["budget"]["max_steps"] == 6 and results["budget"]["lincls_epochs"] == 2
    assert results["machines"] and results["total_wall_time_s"] > 0


def test_results_markdown_and_knn_picture(killed_and_restarted):
    root = killed_and_restarted["root"]
    text = (root / "results.md").read_text(encoding="utf-8")
    results = json.loads((root / "results.json").read_text(encoding="utf-8"))
    assert text.startswith("# Table 1: ")
    for row in results["rows"]:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row['name']}: "))
        knn, lin = row["knn_top1"], row["linear_top1"]
        assert f"{knn['mean']:.1f} ± {knn['std']:.1f} (n=2)" in line
        assert f"{lin['mean']:.1f} ± {lin['std']:.1f} (n=2)" in line
        for run in row["runs"]:
            assert f"{run['seed']}: {run['knn_top1']:.1f}" in line
    assert (
        "| reference: raw pixels" in text
        and "| reference: same network at initialisation (seed 0)" in text
    )
    assert "is not one of the paper's data sets" in text and "LogisticRegression" in text
    assert (
        "Machine: " in text
        and "6 steps" in text
        and "Command: `python tools/reproduce.py --table 1" in text
    )
    assert (root / "knn_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_partial_table_shows_the_missing_seeds_as_pending(killed_and_restarted):
    root, lincls = killed_and_restarted["root"], killed_and_restarted["lincls"]
    plan = build_plan(
        1,
        "digits_demo.yaml",
        [0, 1, 7],
        rows="byol_aa,msr_fixed",
        lincls=lincls,
        opts=[*TINY, "OUTPUT_DIR", str(root)],
    )
    text = format_markdown(collect(plan))
    assert "(n=2 of 3, rest pending)" in text
    assert "| msr_fixed: MSR, fixed beta 0.5 | pending | pending | - | - |" in text


def test_slurm_launcher_with_submitits_local_executor(killed_and_restarted, tmp_path, monkeypatch):
    """One job through submitit's local executor: a run whose pretraining and kNN are done, its result.json lost."""
    import submitit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "root"
    shutil.copytree(killed_and_restarted["root"], root)
    expected = json.loads((root / "byol_aa" / "seed1" / "result.json").read_text(encoding="utf-8"))
    (root / "byol_aa" / "seed1" / "result.json").unlink()
    progress = json.loads(
        (root / "byol_aa" / "seed1" / "progress.json").read_text(encoding="utf-8")
    )
    del progress[
        "lincls"
    ]  # as if killed during the linear evaluation: only that stage runs again (it resumes)
    (root / "byol_aa" / "seed1" / "progress.json").write_text(
        json.dumps(progress), encoding="utf-8"
    )
    finished = (root / "byol_aa" / "seed0" / "result.json").stat().st_mtime_ns
    tool = _tool()
    args = tool.parse_args(
        _argv(
            root,
            killed_and_restarted["lincls"],
            rows=("byol_aa",),
            seeds=(0, 1),
            extra=[
                "--launcher",
                "slurm",
                "--slurm-gpus-per-node",
                "0",
                "--slurm-cpus-per-task",
                "1",
                "--slurm-poll-s",
                "0.2",
            ],
        )
    )
    factory = lambda folder: submitit.AutoExecutor(folder=folder, cluster="local")  # noqa: E731
    assert reproduce.main(args, executor_factory=factory) == 0
    assert (
        root / "byol_aa" / "seed0" / "result.json"
    ).stat().st_mtime_ns == finished  # not resubmitted
    assert (
        len(list((root / "submitit").glob("*_submitted.pkl"))) == 1
    )  # the unfinished run; references cached
    redone = json.loads((root / "byol_aa" / "seed1" / "result.json").read_text(encoding="utf-8"))
    for key in (
        "knn_top1",
        "linear_top1",
        "linear_best_top1",
        "linear_best_epoch",
        "knn_curve",
        "step",
    ):
        assert redone[key] == expected[key]
    results = json.loads((root / "results.json").read_text(encoding="utf-8"))
    assert [r["seed"] for r in results["rows"][0]["runs"]] == [0, 1] and results["rows"][0][
        "linear_top1"
    ]["n"] == 2


def test_export_has_portable_paths_and_a_copied_back_export_is_not_rerun(
    killed_and_restarted, tmp_path, capsys
):
    root, lincls = killed_and_restarted["root"], killed_and_restarted["lincls"]
    tool, export = _tool(), tmp_path / "export"
    assert (
        reproduce.main(tool.parse_args(_argv(root, lincls, extra=["--export", str(export)]))) == 0
    )
    assert "exported 9 files" in capsys.readouterr().out  # 3 tables + 2 references + 4 runs
    assert not list(export.rglob("*.pth")) and not list(export.rglob("*.log"))
    for path in export.rglob("*"):
        if path.is_file() and path.suffix != ".png":
            text = path.read_text(encoding="utf-8")
            assert str(root) not in text and ROOT not in text, path
    assert "--export" not in (export / "results.md").read_text(
        encoding="utf-8"
    )  # the command that ran it
    exported = json.loads((export / "results.json").read_text(encoding="utf-8"))
    assert exported["rows"][0]["runs"][0]["output_dir"] == "byol_aa/seed0"
    copied_back = tmp_path / "copied_back"
    shutil.copytree(export, copied_back)
    assert reproduce.main(tool.parse_args(_argv(copied_back, lincls))) == 0
    assert "== Table" not in capsys.readouterr().out  # every run finished: nothing is trained again
    again = json.loads((copied_back / "results.json").read_text(encoding="utf-8"))
    assert [r["knn_top1"] for r in again["rows"]] == [r["knn_top1"] for r in exported["rows"]]
