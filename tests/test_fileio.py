import json

import pytest

from amrg.fileio import staged_folder, write_json


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
