import json
import os

import pytest

from amrg.fileio import FolderLockedError, folder_lock, staged_folder, staging_folders, write_json


def test_a_failed_write_leaves_the_existing_folder_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        with staged_folder(target):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with staged_folder(target, overwrite=True) as staging:
            (staging / "half.txt").write_text("half-written")
            raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    with staged_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("complete")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "deep" / "metrics.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_swap_killed_halfway_gives_the_old_folder_back(tmp_path):
    """A writer killed between moving the old folder aside and renaming the new one in leaves `target` missing and
    the old content in a retired folder: the next writer restores it (the killed one never reported success)."""
    target = tmp_path / "out"
    retired = tmp_path / ".out.retired.abcd_123"
    (retired / "out").mkdir(parents=True)
    (retired / "out" / "keep.txt").write_text("user data")
    (tmp_path / ".out.staging.wxyz_789").mkdir()  # the new content, never confirmed
    with pytest.raises(ValueError, match="not empty"):
        with staged_folder(target):
            pass
    assert (target / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_lock_is_held_for_the_block_only_and_is_not_reentrant(tmp_path):
    target = tmp_path / "out"
    with folder_lock(target) as lock:
        assert lock == tmp_path / "out.lock" and lock.read_text().strip() == str(os.getpid())
        with pytest.raises(FolderLockedError, match=f"output folder {target} is being written by another process"):
            with staged_folder(target):
                pass
    assert not (tmp_path / "out.lock").exists()
    with staged_folder(target) as staging:
        (staging / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_only_this_targets_staging_folders_are_cleaned(tmp_path):
    for name in (".out.v2.staging.abcdefgh", ".out.staging.abcdefgh.x", ".out.stagingabcdefgh", ".out.json.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / ".out.staging.abcdefgh").mkdir()
    assert staging_folders(tmp_path / "out") == [tmp_path / ".out.staging.abcdefgh"]
    with staged_folder(tmp_path / "out"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.tmp", ".out.staging.abcdefgh.x",
                                                          ".out.stagingabcdefgh", ".out.v2.staging.abcdefgh", "out"]
