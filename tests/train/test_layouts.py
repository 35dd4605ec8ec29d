"""Every folder layout gives the same samples, boxes and class names as the equivalent COCO JSON.

The layouts are written as small real files (JPEG, PNG, BMP, WebP; grayscale, CMYK and RGBA
images; VOC XML, YOLO txt, COCO JSON) by ``layout_files``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedet.cli import main
from edgedet.errors import DataError
from edgedet.train.check import check_dataset
from edgedet.train.datasets import load_dataset
from edgedet.train.layouts import detect_layout

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib adds no test folder itself
import layout_files as lf  # noqa: E402


def _canon(ds):
    """Split sizes and, per split, (file name, size, [(class name, box rounded)]) sorted by name."""
    def one(s):
        boxes = [(ds.class_names[c], tuple(np.round(b, 2).tolist())) for b, c in zip(s.boxes, s.classes)]
        return Path(s.image_path).name, s.width, s.height, boxes
    return {k: sorted(map(one, v)) for k, v in ds.splits.items()}


@pytest.fixture(scope="module")
def coco_equivalents(tmp_path_factory):
    out = {}
    for split in (True, False):
        root = tmp_path_factory.mktemp(f"coco_split{split}")
        lf.write_coco(root, split=split)
        out[split] = load_dataset(root)
    root = tmp_path_factory.mktemp("coco_noname")
    lf.write_coco(root, split=False, names=["class0", "class1", "class2"])
    out["noname"] = load_dataset(root)
    return out


@pytest.mark.parametrize("layout", list(lf.LAYOUTS))
def test_layout_matches_coco(layout, tmp_path, coco_equivalents):
    write, has_splits = lf.LAYOUTS[layout]
    root = tmp_path / "ds"
    root.mkdir()
    write(root)
    lay = detect_layout(root)
    assert lay.kind == layout.split("-")[0], lay
    ds = load_dataset(root)
    ref = coco_equivalents["noname" if layout == "yolo-no-class-names" else has_splits]
    assert ds.class_names == ref.class_names
    got, want = _canon(ds), _canon(ref)
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    if has_splits:
        assert got == want
    else:  # a seeded ratio split: compare all samples
        assert sorted(x for v in got.values() for x in v) == sorted(x for v in want.values() for x in v)
    if layout == "yolo-no-class-names":
        assert len(ds.notes) == 1 and "using class0..class2" in ds.notes[0]
    else:
        assert not ds.notes
    # every image decodes (grayscale, CMYK, RGBA, BMP, WebP): only the background image is reported
    _, issues = check_dataset(ds)
    assert [(Path(i.file).stem, i.kind) for i in issues] == [("g", "empty_image")], [str(i) for i in issues]


def test_ambiguous_and_unrecognised_folders(tmp_path):
    both = tmp_path / "both"
    lf.voc_beside(both)
    lf.yolo_pairs("classes.txt")(both)
    with pytest.raises(DataError, match=r"ambiguous dataset folder: .*VOC XML beside the images and YOLO image \+ .txt"):
        load_dataset(both)
    assert load_dataset(both, format="yolo").source_format == "yolo"
    # commands without --format (train, eval, validate, pipeline ...) take the format as a prefix
    assert load_dataset(f"voc:{both}").source_format == "voc"
    assert load_dataset(f"yolo:{both}").source_format == "yolo"
    imgs = tmp_path / "only_images"
    lf.image(imgs / "images" / "a.jpg", (8, 8))
    with pytest.raises(DataError, match=r"no dataset found \(looked for VOC XML .*closest: 1 images but no annotations"):
        load_dataset(imgs)
    xml_only = tmp_path / "xml_only"
    lf.voc_folders("images", "annotations")(xml_only)
    for f in (xml_only / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"closest: VOC: 7 .xml files in annotations/ but no image folder"):
        load_dataset(xml_only)
    txt_only = tmp_path / "txt_only"
    txt_only.mkdir()
    (txt_only / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"closest: YOLO: 1 .txt label files in txt_only/ but no images"):
        load_dataset(txt_only)
    nested = tmp_path / "download"  # a zip unpacked into one more folder
    lf.voc_beside(nested / "dataset-v2")
    assert load_dataset(nested).layout == "VOC XML beside the images"


def test_repairs_are_listed(tmp_path, capsys):
    root = tmp_path / "voc"
    lf.voc_beside(root)
    xml = (root / "a.xml").read_text()
    # size 0 (filled from the image), a label differing only in case and spacing, a box past the border
    xml = xml.replace("<width>64</width>", "<width>0</width>").replace("<name>cat</name>", "<name> Cat </name>")
    (root / "a.xml").write_text(xml.replace("<xmax>60</xmax>", "<xmax>70</xmax>"))
    (root / "d.xml").write_text((root / "d.xml").read_text().replace("<xmin>1</xmin>", "<xmin>40</xmin>")
                                .replace("<xmax>30</xmax>", "<xmax>5</xmax>", 1))
    ds = load_dataset(root)
    assert ds.class_names == ["bird", "cat", "dog"]
    assert main(["data", "check", str(root), "--fix"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == [
        "a.xml: image size missing or 0 in the annotation -> used the image's 64x48",
        "a.xml: cat box [2, 3, 30, 40]: label ' Cat ' differs from class 'cat' only in case or spacing -> used 'cat'",
        "a.xml: dog box [10, 5, 70, 44]: box extends outside the 64x48 image -> clipped box",
        "d.xml: dog box [40, 1, 5, 30]: inverted box (max corner before min corner) -> swapped corners",
        "g.xml: no boxes -> kept as background",
    ]
    assert main(["data", "check", str(root), "--strict"]) == 2
    # a given class list: spelling variants map onto it, reported the same way
    ds = load_dataset(root, classes="bird,cat,dog")
    _, issues = check_dataset(ds, "skip")
    assert [i.kind for i in issues if i.file == "a.xml"] == ["size_filled", "relabelled", "outside_box"]


def test_image_conversion_and_exif_everywhere(tmp_path):
    """One conversion (runtime.preprocess.load_image) in the checker, training input and runtime."""
    tf = pytest.importorskip("tensorflow")
    from edgedet.runtime.preprocess import load_image
    from edgedet.train.input import _decode

    root = tmp_path / "exif"
    arr = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)  # stored 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 20 wide, 40 high
    root.mkdir()
    Image.fromarray(arr).save(root / "r.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    lf.image(root / "k.jpg", (24, 16), "CMYK")
    lf.image(root / "p.png", (24, 16), "RGBA")
    lf.write_voc_xml(root / "r.xml", "r.jpg", (20, 40), [("cat", (1, 1, 10, 30))])  # labelled as displayed
    ds = load_dataset(root)
    s = ds.samples()[0]
    assert (s.width, s.height) == (20, 40)
    assert check_dataset(ds)[1] == []  # the annotated size agrees with the displayed image
    for name, shape in (("r.jpg", (40, 20, 3)), ("k.jpg", (16, 24, 3)), ("p.png", (16, 24, 3))):
        rt = load_image(root / name)
        assert rt.shape == shape and rt.dtype == np.uint8
        np.testing.assert_array_equal(_decode(tf.constant(str(root / name))).numpy(), rt)


def test_stats_plot_and_warnings(tmp_path, capsys):
    root = tmp_path / "yolo"
    lf.yolo_roboflow(root)
    png = tmp_path / "stats.png"
    assert main(["data", "stats", str(root), "--plot", str(png), "--image-size", "512", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["layout"] == "YOLO data YAML (data.yaml)"
    assert st["boxes_per_class_split"]["train"] == {"bird": 2, "cat": 2, "dog": 2}
    assert st["box_size_coco"]["train"] == {"small": 3, "medium": 3, "large": 0}
    assert st["warnings"] == [
        "3 classes have fewer than 10 boxes: 'bird' (2), 'cat' (3), 'dog' (3)",
        "split 'val' has no boxes of 2 of 3 classes: 'bird', 'dog'",
        "split 'test' has no boxes of 2 of 3 classes: 'bird', 'cat'",
        "7 images are more than 4x smaller than the 512 px model input (smallest 32x32: e.webp)",
    ]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 600
