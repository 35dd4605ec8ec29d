"""Dataset checker: BCCD's two degenerate boxes exactly, and a hand-made broken dataset per policy."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib adds no test folder itself
from layout_files import write_voc_xml  # noqa: E402

from edgedet.cli import main
from edgedet.errors import DataError
from edgedet.train.check import DataCheckError, check_dataset, load_checked
from edgedet.train.datasets import load_dataset

BCCD_LINES = [
    "Annotations/BloodImage_00338.xml: RBC box [504, 337, 504, 337]: degenerate box (zero width and height) -> skipped box",
    "Annotations/BloodImage_00343.xml: RBC box [181, 329, 181, 329]: degenerate box (zero width and height) -> skipped box",
]


@pytest.fixture(scope="module")
def bccd_ds(bccd):
    return load_dataset(bccd)


def test_bccd_exactly_two_degenerate_boxes(bccd_ds):
    t = time.perf_counter()
    clean, issues = check_dataset(bccd_ds, "skip")
    elapsed = time.perf_counter() - t
    assert [str(i) for i in issues] == BCCD_LINES
    assert [(i.file, i.box, i.label, i.kind, i.split) for i in issues] == [
        ("Annotations/BloodImage_00338.xml", (504.0, 337.0, 504.0, 337.0), "RBC", "degenerate_box", "val"),
        ("Annotations/BloodImage_00343.xml", (181.0, 329.0, 181.0, 329.0), "RBC", "degenerate_box", "train"),
    ]
    # skip: the two boxes go, every image stays, nothing else changes
    assert {k: len(v) for k, v in clean.splits.items()} == {"train": 205, "val": 87, "test": 72}
    assert sum(s.num_boxes for s in clean.samples()) == 4888 - 2
    s338 = next(s for s in clean.samples() if s.image_path.endswith("BloodImage_00338.jpg"))
    orig = next(s for s in bccd_ds.samples() if s.image_path.endswith("BloodImage_00338.jpg"))
    assert s338.num_boxes == orig.num_boxes - 1
    assert not ((s338.boxes[:, 2] - s338.boxes[:, 0]) <= 0).any()
    assert elapsed < 20, f"checking BCCD took {elapsed:.1f} s"  # ~1 s on an idle 2-core machine


def test_bccd_policies(bccd_ds):
    clean_fix, issues_fix = check_dataset(bccd_ds, "fix")
    # a zero-size box has nothing to repair: --fix drops it as well
    assert [i.action for i in issues_fix] == ["skipped box", "skipped box"]
    assert sum(s.num_boxes for s in clean_fix.samples()) == 4886
    with pytest.raises(DataCheckError, match=r"2 problems \(--strict\); first: Annotations/BloodImage_00338.xml") as ei:
        check_dataset(bccd_ds, "strict")
    assert [i.action for i in ei.value.issues] == ["error", "error"]
    with pytest.raises(DataError, match="did you mean 'strict'"):
        check_dataset(bccd_ds, "strikt")


def test_bccd_cli(bccd, capsys):
    assert main(["data", "check", str(bccd)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == BCCD_LINES and len(out) == 3
    assert "364 images" in out[2] and "2 issues" in out[2] and "kept 364 images, 4886 boxes" in out[2]
    assert main(["data", "check", str(bccd), "--json", "--fix"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [(i["file"], i["box"], i["reason"]) for i in rep["issues"]] == [
        ("Annotations/BloodImage_00338.xml", [504, 337, 504, 337], "degenerate box (zero width and height)"),
        ("Annotations/BloodImage_00343.xml", [181, 329, 181, 329], "degenerate box (zero width and height)"),
    ]
    assert rep["ok"] and rep["clean"]["train"]["boxes"] + rep["clean"]["val"]["boxes"] + rep["clean"]["test"]["boxes"] == 4886
    assert main(["data", "check", str(bccd), "--strict"]) == 2
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0].endswith("-> error")
    assert cap.err.startswith("edgedet: error:") and len(cap.err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- broken dataset
def _write(root: Path, stem: str, objs, size=(64, 48), ann_size=None, image=True):
    if image:
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(len(stem)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "JPEGImages" / f"{stem}.jpg", "JPEG", quality=90)
    write_voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", ann_size or size, objs)


@pytest.fixture()
def broken(tmp_path) -> Path:
    root = tmp_path / "broken"
    (root / "JPEGImages").mkdir(parents=True)
    # fine: border-touching box, and one 0.5 px past the border (silently clipped, no issue)
    _write(root, "a_good", [("cat", (0, 0, 64, 48)), ("dog", (10, 10, 64.5, 30))])
    _write(root, "b_trunc", [("cat", (1, 1, 20, 20))])
    data = (root / "JPEGImages/b_trunc.jpg").read_bytes()
    (root / "JPEGImages/b_trunc.jpg").write_bytes(data[: len(data) // 2])
    _write(root, "c_outside", [("cat", (50, 10, 80, 30)), ("dog", (70, 10, 90, 20)), ("cat", (1, 1, 9, 9))])
    _write(root, "d_size", [("cat", (10, 10, 20, 20))], ann_size=(100, 100))
    _write(root, "e_dup", [("cat", (10, 10, 50, 40)), ("cat", (10, 10, 50, 40)), ("cat", (10, 10, 50, 40.5)),
                           ("dog", (10, 10, 50, 40)), ("cat", (10, 11, 50, 41))])
    _write(root, "f_empty", [])
    _write(root, "g_inverted", [("dog", (30, 10, 5, 40))])
    _write(root, "h_degenerate", [("cat", (5, 5, 5, 5)), ("cat", (5, 5, 30, 5.5))])
    _write(root, "i_missing", [("cat", (1, 1, 9, 9))], image=False)
    (root / "labels.txt").write_text("cat\ndog\n")
    return root


def _by_file(issues):
    out = {}
    for i in issues:
        out.setdefault(Path(i.file).stem, []).append((i.kind, i.action))
    return out


def test_broken_dataset_skip(broken):
    ds = load_dataset(broken, ratios=(1, 0, 0))
    clean, issues = check_dataset(ds, "skip")
    assert _by_file(issues) == {
        "b_trunc": [("unreadable_image", "skipped image")],
        "c_outside": [("outside_box", "skipped box"), ("outside_box", "skipped box")],
        "d_size": [("size_mismatch", "skipped image")],
        "e_dup": [("duplicate_box", "skipped box"), ("duplicate_box", "skipped box")],
        "f_empty": [("empty_image", "kept as background")],
        "g_inverted": [("inverted_box", "skipped box"), ("empty_image", "skipped image")],
        "h_degenerate": [("degenerate_box", "skipped box"), ("degenerate_box", "skipped box"),
                         ("empty_image", "skipped image")],
        "i_missing": [("missing_image", "skipped image")],
    }
    trunc = next(i for i in issues if i.kind == "unreadable_image")
    assert trunc.file == "JPEGImages/b_trunc.jpg" and "truncated" in trunc.reason
    assert "100x100 disagrees with the image's 64x48" in next(i.reason for i in issues if i.kind == "size_mismatch")
    assert "entirely outside" in next(i.reason for i in issues if i.box == (70.0, 10.0, 90.0, 20.0))
    kept = {Path(s.image_path).stem: s for s in clean.samples()}
    assert sorted(kept) == ["a_good", "c_outside", "e_dup", "f_empty"]
    np.testing.assert_allclose(kept["a_good"].boxes, [[0, 0, 64, 48], [10, 10, 64, 30]])
    np.testing.assert_allclose(kept["c_outside"].boxes, [[1, 1, 9, 9]])
    # exact and IoU>0.95 duplicates go; another class, and IoU 0.94 (a near-miss like BCCD's) stay
    np.testing.assert_allclose(kept["e_dup"].boxes, [[10, 10, 50, 40], [10, 10, 50, 40], [10, 11, 50, 41]])
    assert kept["e_dup"].classes.tolist() == [0, 1, 0]
    assert kept["f_empty"].num_boxes == 0


def test_broken_dataset_fix(broken):
    clean, issues = check_dataset(load_dataset(broken, ratios=(1, 0, 0)), "fix")
    acts = _by_file(issues)
    assert acts["c_outside"] == [("outside_box", "clipped box"), ("outside_box", "skipped box")]
    assert acts["d_size"] == [("size_mismatch", "used real size")]
    assert acts["g_inverted"] == [("inverted_box", "swapped corners")]
    assert acts["b_trunc"] == [("unreadable_image", "skipped image")]
    kept = {Path(s.image_path).stem: s for s in clean.samples()}
    np.testing.assert_allclose(kept["c_outside"].boxes, [[50, 10, 64, 30], [1, 1, 9, 9]])
    assert (kept["d_size"].width, kept["d_size"].height) == (64, 48)
    np.testing.assert_allclose(kept["g_inverted"].boxes, [[5, 10, 30, 40]])
    assert "b_trunc" not in kept and "i_missing" not in kept and "h_degenerate" not in kept


def test_broken_dataset_strict_and_header_only(broken):
    ds = load_dataset(broken, ratios=(1, 0, 0))
    with pytest.raises(DataCheckError, match=r"problems \(--strict\)") as ei:
        check_dataset(ds, "strict")
    assert len(ei.value.issues) == 13 and {i.action for i in ei.value.issues} == {"error"}
    # header-only mode cannot see that the JPEG is cut short
    _, issues = check_dataset(ds, "skip", decode=False)
    assert not any(Path(i.file).stem == "b_trunc" for i in issues)


def test_unknown_class_fails_under_every_policy(broken):
    _write(broken, "j_unknown", [("cat", (1, 1, 9, 9)), ("dgo", (2, 2, 9, 9))])
    ds = load_dataset(broken, ratios=(1, 0, 0))
    for policy in ("skip", "fix", "strict"):
        with pytest.raises(DataCheckError, match=r"class list disagrees .*'dgo' \(did you mean 'dog'\?\)"):
            check_dataset(ds, policy)
    lines = []
    with pytest.raises(DataError, match="class list disagrees"):
        load_checked(broken, log=lines.append, ratios=(1, 0, 0))


def test_load_checked_logs_warnings(broken):
    lines = []
    clean = load_checked(broken, log=lines.append, max_lines=3, ratios=(1, 0, 0))
    assert len(lines) == 4 and lines[0].startswith("warning: ") and "and 10 more" in lines[-1]
    assert len(clean.samples()) == 4


def test_untrainable_format_and_swapped_size(tmp_path):
    root = tmp_path / "fmt"
    _write(root, "a", [("cat", (1, 1, 20, 20))])
    _write(root, "b", [("cat", (1, 1, 20, 20))], size=(64, 48), ann_size=(48, 64))
    Image.open(root / "JPEGImages/a.jpg").save(root / "JPEGImages/a.ppm", "PPM")
    (root / "JPEGImages/a.jpg").unlink()
    xml = (root / "Annotations/a.xml").read_text().replace("a.jpg", "a.ppm")
    (root / "Annotations/a.xml").write_text(xml)
    _, issues = check_dataset(load_dataset(root, ratios=(1, 0, 0)), "skip")
    assert [(i.file, i.kind, i.action) for i in issues] == [
        ("JPEGImages/a.ppm", "unreadable_image", "skipped image"),
        ("Annotations/b.xml", "size_mismatch", "skipped image")]
    assert "PPM images are not supported" in issues[0].reason
    assert "EXIF rotation?" in issues[1].reason
    # --fix repairs a wrong size, but not a swapped one: the boxes' orientation is unknown
    _, fixed = check_dataset(load_dataset(root, ratios=(1, 0, 0)), "fix")
    assert ("Annotations/b.xml", "size_mismatch", "skipped image") in [(i.file, i.kind, i.action) for i in fixed]


def test_json_check_of_an_unreadable_dataset_still_prints_a_document(tmp_path, capsys):
    import json

    from edgedet.cli import main

    assert main(["data", "check", str(tmp_path / "nope"), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and "does not exist" in doc["error"] and doc["issues"] == []
