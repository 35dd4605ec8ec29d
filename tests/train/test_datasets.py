"""Readers on real files: VOC from ../shared (BCCD), COCO and YOLO written here with tiny JPEGs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib adds no test folder itself
from layout_files import write_voc_xml  # noqa: E402

from edgedet.errors import DataError
from edgedet.train.check import DataCheckError, check_dataset
from edgedet.train.datasets import detect_format, load_dataset, ratio_split, split_name
from edgedet.train.stats import dataset_stats


def jpeg(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=80)
    return path


# ----------------------------------------------------------------------------- VOC
def test_voc_bccd(bccd):
    ds = load_dataset(bccd)
    assert ds.source_format == "voc"
    assert ds.class_names == ["Platelets", "RBC", "WBC"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 205, "val": 87, "test": 72}
    train_ids = (bccd / "ImageSets/Main/train.txt").read_text().split()
    assert [Path(s.image_path).stem for s in ds.split("train")] == train_ids
    assert sum(s.num_boxes for s in ds.samples()) == 4888
    # BloodImage_00000.xml: first object is WBC 260,177,491,376
    s0 = next(s for s in ds.samples() if Path(s.image_path).name == "BloodImage_00000.jpg")
    assert (s0.width, s0.height) == (640, 480)
    assert s0.boxes.dtype == np.float32 and s0.classes.dtype == np.int32
    np.testing.assert_array_equal(s0.boxes[0], [260, 177, 491, 376])
    assert ds.class_names[s0.classes[0]] == "WBC"
    assert s0.ann_path.endswith("Annotations/BloodImage_00000.xml")
    assert len({s.image_id for s in ds.samples()}) == 364
    st = dataset_stats(ds)
    assert st["boxes_per_class"] == {"Platelets": 361, "RBC": 4155, "WBC": 372}


def _voc(root: Path, objects: dict[str, list[tuple[str, tuple]]], size=(64, 48)) -> Path:
    for i, (stem, objs) in enumerate(objects.items()):
        jpeg(root / "JPEGImages" / f"{stem}.jpg", *size, seed=i)
        write_voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", size, objs)
    return root


def test_voc_ratio_split_without_imagesets(tmp_path):
    objs = {f"img{i:02d}": [("cat" if i % 2 else "dog", (1, 2, 30, 40))] for i in range(20)}
    root = _voc(tmp_path / "voc", objs)
    a, b = load_dataset(root), load_dataset(root)
    assert a.class_names == ["cat", "dog"]  # sorted label names
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 16, "val": 2, "test": 2}
    assert [s.image_path for s in a.split("val")] == [s.image_path for s in b.split("val")]
    c = load_dataset(root, seed=1)
    assert [s.image_path for s in c.split("val")] != [s.image_path for s in a.split("val")]
    all_paths = sorted(s.image_path for s in a.samples())
    assert all_paths == sorted(str((root / "JPEGImages" / f"img{i:02d}.jpg").resolve()) for i in range(20))


def test_voc_trainval_only_and_class_file(tmp_path):
    objs = {f"img{i:02d}": [("cat", (1, 2, 30, 40))] for i in range(10)}
    root = _voc(tmp_path / "voc", objs)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(f"img{i:02d}" for i in range(8)) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("img08\nimg09\n")
    (root / "labels.txt").write_text("dog\ncat\n")
    ds = load_dataset(root)
    assert ds.class_names == ["dog", "cat"]
    assert ds.samples()[0].classes.tolist() == [1]
    assert len(ds.split("test")) == 2 and len(ds.split("train")) + len(ds.split("val")) == 8
    assert len(ds.split("val")) >= 1


def test_voc_errors(tmp_path):
    root = _voc(tmp_path / "voc", {"a": [("cat", (1, 2, 30, 40))]})
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("a\nnope\n")
    with pytest.raises(DataError, match="nope"):
        load_dataset(root)
    (root / "ImageSets/Main/train.txt").unlink()
    for f in (root / "JPEGImages").iterdir():
        f.unlink()
    (root / "JPEGImages").rmdir()
    with pytest.raises(DataError, match="missing image directory JPEGImages"):
        load_dataset(root)


def test_voc_unknown_class_with_given_class_list(tmp_path):
    root = _voc(tmp_path / "voc", {"a": [("cat", (1, 2, 30, 40)), ("cta", (3, 3, 20, 20))], "b": [("cat", (1, 1, 9, 9))]})
    ds = load_dataset(root, classes="cat,dog")
    sa = next(s for s in ds.samples() if s.image_path.endswith("a.jpg"))
    assert sa.classes.tolist() == [0, -1] and sa.unknown_labels == {1: "cta"}
    with pytest.raises(DataCheckError, match=r"class list disagrees with the labels.*'cta'.*did you mean 'cat'"):
        check_dataset(ds)


# ----------------------------------------------------------------------------- COCO
def _coco(root: Path) -> Path:
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}]
    splits = {"train": [(101, 40, 30), (102, 50, 20)], "val": [(205, 40, 30)]}
    for split, imgs in splits.items():
        images, anns = [], []
        for iid, w, h in imgs:
            jpeg(root / f"{split}2017" / f"{iid}.jpg", w, h, seed=iid)
            images.append({"id": iid, "file_name": f"{iid}.jpg", "width": w, "height": h})
        data = {"images": images, "annotations": anns, "categories": cats}
        if split == "train":
            anns += [
                {"id": 1, "image_id": 101, "category_id": 7, "bbox": [2, 3, 10, 20], "iscrowd": 0},
                {"id": 2, "image_id": 101, "category_id": 12, "bbox": [5.5, 1, 4, 4]},
                {"id": 3, "image_id": 102, "category_id": 3, "bbox": [0, 0, 50, 20], "iscrowd": 1},
            ]
        else:
            anns += [{"id": 4, "image_id": 205, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root


def test_coco_reader(tmp_path):
    root = _coco(tmp_path / "coco")
    assert detect_format(root) == "coco"
    ds = load_dataset(root)
    assert ds.source_format == "coco"
    assert ds.class_names == ["cat", "dog", "bird"]  # category id order 3, 7, 12 -> 0, 1, 2
    assert list(ds.splits) == ["train", "val"]  # no test file: no test split is invented
    s101, s102 = ds.split("train")
    assert (s101.image_id, s101.width, s101.height) == (101, 40, 30)
    np.testing.assert_allclose(s101.boxes, [[2, 3, 12, 23], [5.5, 1, 9.5, 5]])
    assert s101.classes.tolist() == [1, 2]
    assert s102.num_boxes == 0  # the iscrowd region is not a trainable box
    assert Path(s101.image_path) == (root / "train2017" / "101.jpg").resolve()
    assert ds.split("val")[0].classes.tolist() == [0]
    with pytest.raises(DataError, match="no split 'test'"):
        ds.split("test")


def test_coco_single_file_ratio_split_and_unknown_category(tmp_path):
    root = tmp_path / "one"
    images = [{"id": i, "file_name": f"images/{i}.jpg", "width": 32, "height": 32} for i in range(10)]
    del images[0]["width"], images[0]["height"]  # optional in some exporters: read from the header
    for i in range(10):
        jpeg(root / "images" / f"{i}.jpg", 32, 32, seed=i)
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in range(10)]
    anns.append({"id": 99, "image_id": 3, "category_id": 5, "bbox": [2, 2, 8, 8]})
    (root / "labels.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": 1, "name": "thing"}]}))
    ds = load_dataset(root / "labels.json")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 1, "test": 1}
    s3 = next(s for s in ds.samples() if s.image_id == 3)
    assert s3.classes.tolist() == [0, -1] and s3.unknown_labels == {1: "category_id 5"}
    assert next((s.width, s.height) for s in ds.samples() if s.image_id == 0) == (32, 32)
    with pytest.raises(DataCheckError, match="class list disagrees with the labels"):
        check_dataset(ds)


def test_coco_errors(tmp_path):
    root = _coco(tmp_path / "coco")
    for f in (root / "val2017").iterdir():
        f.unlink()
    (root / "val2017").rmdir()
    with pytest.raises(DataError, match="instances_val2017.json: missing image directory"):
        load_dataset(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "instances_train.json").write_text(json.dumps({"images": [], "annotations": [],
                                                            "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match="empty dataset"):
        load_dataset(empty)
    with pytest.raises(DataError, match="class list .* disagrees"):
        load_dataset(_coco(tmp_path / "c2"), classes=["cat", "dog"])


# ----------------------------------------------------------------------------- YOLO
def _yolo(root: Path, nc_line: str = "") -> Path:
    jpeg(root / "images/train/a.jpg", 100, 50, seed=1)
    jpeg(root / "images/train/b.jpg", 80, 80, seed=2)
    jpeg(root / "images/val/c.jpg", 40, 20, seed=3)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.1 0.2\n")
    # b.jpg has no label file: a background image
    (root / "labels/val/c.txt").write_text("2 0.25 0.25 0.5 0.5 0.25 0.75\n")  # segment -> its bbox
    (root / "data.yaml").write_text(
        f"path: .\ntrain: images/train\nval: images/val\n{nc_line}names:\n  0: red\n  1: green\n  2: blue\n")
    return root


def test_yolo_reader(tmp_path):
    root = _yolo(tmp_path / "yolo")
    assert detect_format(root) == "yolo" and detect_format(root / "data.yaml") == "yolo"
    ds = load_dataset(root)
    assert ds.class_names == ["red", "green", "blue"]
    assert [Path(s.image_path).name for s in ds.split("train")] == ["a.jpg", "b.jpg"]
    a, b = ds.split("train")
    assert (a.width, a.height) == (100, 50)  # from the real image
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [5, 5, 15, 15]], atol=1e-4)
    assert a.classes.tolist() == [0, 1]
    assert b.num_boxes == 0
    c = ds.split("val")[0]
    np.testing.assert_allclose(c.boxes, [[10, 5, 20, 15]], atol=1e-4)
    assert c.classes.tolist() == [2]
    clean, issues = check_dataset(ds)
    assert [(i.kind, i.action) for i in issues] == [("empty_image", "kept as background")]


def test_yolo_roboflow_layout(tmp_path):
    root = tmp_path / "rf"
    for split, n in (("train", 3), ("valid", 1), ("test", 1)):
        for i in range(n):
            jpeg(root / split / "images" / f"{i}.jpg", 32, 32, seed=i)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
                                    "nc: 1\nnames: ['thing']\n")
    ds = load_dataset(root)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 3, "val": 1, "test": 1}
    np.testing.assert_allclose(ds.split("val")[0].boxes, [[8, 8, 24, 24]])


def test_yolo_errors(tmp_path):
    with pytest.raises(DataError, match="nc is 4 but 'names' has 3"):
        load_dataset(_yolo(tmp_path / "y1", nc_line="nc: 4\n"))
    root = _yolo(tmp_path / "y2")
    (root / "data.yaml").write_text("train: images/train\nval: images/nowhere\nnames: [a, b, c]\n")
    with pytest.raises(DataError, match="missing image directory"):
        load_dataset(root)
    root = _yolo(tmp_path / "y3")
    (root / "labels/train/a.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    ds = load_dataset(root)
    with pytest.raises(DataCheckError, match="'class id 5'"):
        check_dataset(ds)
    (root / "labels/train/a.txt").write_text("red 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a.txt:1: expected"):
        load_dataset(root)


# ----------------------------------------------------------------------------- common
def test_detect_and_split_helpers(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="no dataset found"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="did you mean 'voc'"):
        load_dataset(tmp_path, format="vco")
    assert split_name("instances_val2017.json") == "val"
    assert split_name("valid") == "val" and split_name("test.json") == "test" and split_name("labels") is None
    parts = ratio_split(list(range(7)) and [_fake(i) for i in range(7)], (0.8, 0.1, 0.1), seed=0)
    assert sum(len(v) for v in parts.values()) == 7 and all(len(parts[k]) >= 1 for k in ("train", "val", "test"))


def _fake(i):
    from edgedet.train.datasets import make_sample

    return make_sample(f"/x/{i}.jpg", 10, 10, [], [], i)


def test_coco_as_roboflow_and_segmentation_tools_export_it(tmp_path):
    """Roboflow's dataset-level category 0 is no class; polygon-only annotations are boxed by their
    bounds; crowd regions and box-less annotations are left out, each with a note."""
    import json

    from PIL import Image

    from edgedet.train.datasets import load_dataset

    root = tmp_path / "rf"
    (root / "train").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 48)).save(root / "train" / f"im{i}.jpg")
    doc = {
        "categories": [{"id": 0, "name": "cells", "supercategory": "none"},
                       {"id": 1, "name": "RBC", "supercategory": "cells"},
                       {"id": 2, "name": "WBC", "supercategory": "cells"}],
        "images": [{"id": i, "file_name": f"im{i}.jpg", "width": 64, "height": 48} for i in range(2)],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 0, "category_id": 2, "segmentation": [[5, 6, 25, 6, 25, 30, 5, 30]], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [], "segmentation": [[0, 0, 8, 0, 8, 4]]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
            {"id": 5, "image_id": 1, "category_id": 1, "segmentation": {"counts": "abc", "size": [48, 64]}},
        ],
    }
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(doc))
    ds = load_dataset(root)
    assert ds.class_names == ["RBC", "WBC"]
    by_name = {s.image_path.rsplit("/", 1)[-1]: s for split in ds.splits.values() for s in split}
    first = by_name["im0.jpg"]
    assert first.boxes.tolist() == [[1, 2, 11, 22], [5, 6, 25, 30]] and first.classes.tolist() == [0, 1]
    assert by_name["im1.jpg"].boxes.tolist() == [[0, 0, 8, 4]] and by_name["im1.jpg"].classes.tolist() == [1]
    notes = " | ".join(ds.notes)
    assert "category 0 'cells'" in notes and "supercategory" in notes
    assert "2 annotation(s) without 'bbox' boxed by their polygon" in notes
    assert "1 iscrowd region(s) left out" in notes and "neither 'bbox' nor a polygon left out (first: id 5)" in notes


def test_voc_object_without_a_box_is_left_out_with_a_note(tmp_path):
    from PIL import Image

    from edgedet.train.datasets import load_dataset

    for i in range(3):
        Image.new("RGB", (40, 30)).save(tmp_path / f"v{i}.jpg")
        point = "<object><name>cat</name><point><x>3</x><y>4</y></point></object>" if i == 1 else ""
        (tmp_path / f"v{i}.xml").write_text(
            f"<annotation><filename>v{i}.jpg</filename><size><width>40</width><height>30</height></size>"
            f"<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object>"
            f"{point}</annotation>")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["dog"]
    assert sum(len(s.boxes) for split in ds.splits.values() for s in split) == 3
    assert len(ds.notes) == 1 and "1 <object>(s) without <bndbox> left out (first: 'cat' in" in ds.notes[0]


def test_yolo_yaml_written_on_another_machine_reads_its_own_folder(tmp_path):
    from PIL import Image

    from edgedet.train.datasets import load_dataset

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "images" / split / "a.jpg")
        (tmp_path / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (tmp_path / "data.yaml").write_text("path: /content/datasets/cells\ntrain: images/train\nval: images/val\nnames: [cell]\n")
    ds = load_dataset(tmp_path)
    assert {k: len(v) for k, v in ds.splits.items() if v} == {"train": 1, "val": 1}
    assert len(ds.notes) == 1 and "'path: /content/datasets/cells' is not a folder here" in ds.notes[0]


def test_a_class_named_like_its_own_supercategory_stays_a_class(tmp_path):
    import json

    from PIL import Image

    from edgedet.train.datasets import load_dataset

    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    doc = {"categories": [{"id": 1, "name": "person", "supercategory": "person"},
                          {"id": 2, "name": "rider", "supercategory": "person"}],
           "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9]}]}
    (tmp_path / "train.json").write_text(json.dumps(doc))
    ds = load_dataset(tmp_path / "train.json")
    assert ds.class_names == ["person", "rider"] and not ds.notes


def test_a_class_list_with_an_empty_or_repeated_name_is_refused():
    from edgedet.train.datasets import resolve_classes

    assert resolve_classes("RBC, WBC,Platelets") == ["RBC", "WBC", "Platelets"]
    with pytest.raises(DataError, match="an empty name"):
        resolve_classes("RBC,,WBC")
    with pytest.raises(DataError, match="listed twice"):
        resolve_classes("RBC,RBC")
