"""The checkpoint folder logic both trainers share: naming, pruning, temporaries and the resume fallback."""

import os
import re

import pytest

from pretrain.engine.checkpoint import CheckpointError, read_checkpoint_file
from pretrain.engine.checkpointer import (
    Checkpointer,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    pretrain_checkpointer,
)


def _one_file_checkpointer(folder) -> Checkpointer:
    """Like linear evaluation: one file rewritten at every save."""
    return Checkpointer(
        str(folder), lambda _: "state.pth", re.compile(r"state\.pth$"), read_checkpoint_file
    )


def test_pretrain_names_sort_by_step_and_pruning_keeps_the_newest(tmp_path):
    checkpointer = Checkpointer(
        str(tmp_path),
        checkpoint_name,
        re.compile(r"^checkpoint_(\d{7})\.pth$"),
        read_checkpoint_file,
        keep_last=2,
    )
    for step in (5, 40, 300):  # 300 sorts after 40 only because names are zero-padded
        checkpointer.save({"step": step}, step)
    names = [os.path.basename(p) for p in list_checkpoints(str(tmp_path))]
    assert names == ["checkpoint_0000040.pth", "checkpoint_0000300.pth"]
    assert not os.path.exists(tmp_path / "checkpoint_0000005.pth.sha256")  # digest pruned too
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_0000300.pth")
    assert checkpointer.load_newest()[1] == {"step": 300}


def test_keep_last_zero_keeps_everything_and_other_files_are_ignored(tmp_path):
    checkpointer = pretrain_checkpointer(str(tmp_path), keep_last=0)
    for step in (1, 2, 3):
        checkpointer.save({"kind": "x"}, step)
    (tmp_path / "checkpoint_final.pth").write_bytes(b"not ours")
    assert len(checkpointer.paths()) == 3


def test_a_non_main_process_writes_nothing(tmp_path):
    checkpointer = _one_file_checkpointer(tmp_path)
    checkpointer.is_main = False
    path = checkpointer.save({"a": 1}, 7)
    assert path == str(tmp_path / "state.pth") and not os.path.exists(path)


def test_one_file_is_rewritten_and_read_back(tmp_path):
    checkpointer = _one_file_checkpointer(tmp_path)
    checkpointer.save({"epoch": 1}, 1)
    checkpointer.save({"epoch": 2}, 2)
    assert checkpointer.paths() == [str(tmp_path / "state.pth")]
    assert checkpointer.load_newest() == (str(tmp_path / "state.pth"), {"epoch": 2})


def test_no_checkpoint_yet_means_a_new_run(tmp_path):
    assert _one_file_checkpointer(tmp_path / "missing").load_newest() == (None, None)


def test_temporaries_of_its_own_files_are_removed_and_others_kept(tmp_path):
    for name in (
        ".state.pth.tmp.123",
        ".state.pth.sha256.tmp.123",
        ".checkpoint_0000010.pth.tmp.9",
        ".checkpoint_0000010.pth.sha256.tmp.9",
        "notes.tmp.txt",
    ):
        (tmp_path / name).write_bytes(b"half written")
    _one_file_checkpointer(tmp_path).remove_temporaries()
    assert sorted(os.listdir(tmp_path)) == [
        ".checkpoint_0000010.pth.sha256.tmp.9",
        ".checkpoint_0000010.pth.tmp.9",
        "notes.tmp.txt",
    ]
    pretrain_checkpointer(str(tmp_path)).remove_temporaries()
    assert os.listdir(tmp_path) == ["notes.tmp.txt"]


def test_resume_falls_back_past_a_corrupt_newest_file(tmp_path, caplog):
    checkpointer = pretrain_checkpointer(str(tmp_path))
    for step in (1, 2):
        checkpointer.save({"kind": "msr_pretrain", "step": step}, step)
    newest = checkpointer.newest()
    data = bytearray(open(newest, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(newest, "wb").write(bytes(data))
    with pytest.raises(CheckpointError):  # the reader refuses it on its own ...
        read_checkpoint_file(newest)
    path, state = checkpointer.load_newest()
    assert state["step"] == 1 and path.endswith(
        "checkpoint_0000001.pth"
    )  # ... the folder falls back
    assert "Trying the previous checkpoint" in caplog.text


def test_resume_names_the_folder_when_nothing_can_be_read(tmp_path):
    (tmp_path / "state.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="None of the 1 checkpoint.*not a PyTorch checkpoint"):
        _one_file_checkpointer(tmp_path).load_newest()
