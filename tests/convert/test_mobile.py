"""--nms files for MediaPipe Tasks and the Task Library: standard TFLite metadata, QAT and PTQ int8,
the Edge TPU layout, and parity between MediaPipe's ObjectDetector and the runtime's Detector."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from edgedet.errors import ModelFileError
from edgedet.runtime.metadata import read_metadata

pytestmark = [pytest.mark.slow, pytest.mark.shared]
THRESHOLD = 0.5


def _has_writer() -> bool:
    from edgedet.convert.tflite_metadata import mediapipe_metadata

    return mediapipe_metadata() is not None


def _object_detector():
    if not _has_writer():
        pytest.skip("mediapipe not installed")
    from mediapipe.tasks.python.vision import object_detector

    return object_detector


@pytest.fixture(scope="module")
def nms_files(tiny_run, qat_run, calib_dir, tmp_path_factory) -> dict[str, str]:
    """``--nms`` exports: fp32, fp16, int8 (PTQ) of the tiny run and int8 of its QAT run."""
    from edgedet.convert.api import convert

    out = tmp_path_factory.mktemp("nms")
    arts, _ = convert(["tflite-fp32", "tflite-fp16", "tflite-int8"], weights=str(tiny_run), nms=True,
                      calib_data=calib_dir, calib_count=8, out_dir=str(out / "ptq"), log=lambda m: None)
    paths = {a.target: a.path for a in arts}
    (qat,), _ = convert(["tflite-int8"], weights=str(qat_run), nms=True, out_dir=str(out / "qat"), log=lambda m: None)
    paths["tflite-int8-qat"] = qat.path
    return paths


@pytest.fixture(scope="module")
def frames(bccd_images) -> list[np.ndarray]:
    """Two BCCD pictures cut square at the network size, so neither pipeline resizes or pads."""
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB").crop((80, 0, 560, 480)).resize((128, 128), Image.BILINEAR))
            for p in bccd_images[:2]]


def _bare(path: str) -> bytes:
    """The flatbuffer of a ``.tflite`` without its appended associated-files zip."""
    with zipfile.ZipFile(path) as z:
        start = min(i.header_offset for i in z.infolist())
    with open(path, "rb") as f:
        return f.read()[:start]


def test_nms_int8_from_qat_and_ptq(nms_files):
    """--nms int8 converts from a QAT run too; the input quantization is the normalisation (raw
    pixels in) and only the NMS tail is left for the CPU by the Edge TPU."""
    from ai_edge_litert.interpreter import Interpreter

    from edgedet.convert.edgetpu import check_edgetpu

    for key, method in (("tflite-int8", "ptq"), ("tflite-int8-qat", "qat")):
        meta = read_metadata(nms_files[key])
        assert meta.outputs == "nms" and meta.quantization["method"] == method, key
        assert meta.baseline and meta.anchors and meta.source_sha256, key  # edgedet.json round trip
        d = Interpreter(model_path=nms_files[key]).get_input_details()[0]
        assert d["dtype"] == np.uint8 and d["quantization"] == (1 / 128, 127), key
        report = check_edgetpu(nms_files[key])
        assert report.first_unmapped is None, report.summary()
        assert report.expected_cpu[-1] == "TFLite_Detection_PostProcess" and set(report.expected_cpu[:-1]) <= {"DEQUANTIZE"}


def test_standard_metadata_fields(nms_files, exports):
    if not _has_writer():
        pytest.skip("mediapipe not installed")
    from edgedet.convert.tflite_metadata import metadata_json
    from edgedet.runtime.tflite_standard import read_standard

    for path in nms_files.values():
        std = read_standard(path)
        assert std.output_names == ["location", "category", "score", "number of detections"]
        assert std.mean == (127.0,) * 3 and std.std == (128.0,) * 3 and std.label_file == "labels.txt"
    md = metadata_json(nms_files["tflite-int8"])
    assert md["author"] == "edgedet" and md["license"] == "Apache-2.0" and md["version"].startswith("edgedet ")
    loc = md["subgraphMetadata"][0]["outputTensorMetadata"][0]["content"]["contentProperties"]
    assert loc["index"] == [1, 0, 3, 2] and loc["coordinateType"] == 0  # ymin,xmin,ymax,xmax as ratios
    assert [f["name"] for f in md["associatedFiles"]] == ["edgedet.json"]
    raw = read_standard(exports["paths"]["tflite-fp32"])  # raw outputs: every tensor named
    assert raw.output_names == [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)]
    assert read_standard(exports["paths"]["edgetpu"]).label_file == "labels.txt"
    assert read_metadata(exports["paths"]["tflite-fp32"]).baseline == {"AP": 0.25, "AP50": 0.5}


def _same(box, score, name, d, px: float, tol: float) -> bool:
    """A runtime detection (xyxy box) and a MediaPipe one: same label, score within ``tol``, origin
    and size within ``px`` (MediaPipe gives integer origin + size)."""
    b, cat = d.bounding_box, d.categories[0]
    return (name == cat.category_name and abs(score - cat.score) <= tol and abs(box[0] - b.origin_x) <= px
            and abs(box[1] - b.origin_y) <= px and abs(box[2] - box[0] - b.width) <= px and abs(box[3] - box[1] - b.height) <= px)


def _in_frame(x0, y0, x1, y1, size: int, margin: float = 2.0) -> bool:
    return x0 >= margin and y0 >= margin and x1 <= size - margin and y1 <= size - margin


def _match(ours, names, theirs, size: int, px: float = 1.0, tol: float = 0.01) -> tuple[float, float, int]:
    """Pair the detections inside the frame: ``(share of the runtime's found by MediaPipe, share
    of MediaPipe's found in the runtime's, number of in-frame runtime detections)``.

    Boxes that cross the frame edge are not comparable: the NMS op does not clip, the runtime
    clips to the frame (and drops boxes left with no area), MediaPipe clamps the origin but
    keeps the size and drops some of them. Inside the frame both report the op's boxes.
    """
    ours_in = [i for i in range(len(ours.scores)) if _in_frame(*ours.boxes[i], size)]
    theirs_in = [d for d in theirs.detections
                 if _in_frame(d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.origin_x + d.bounding_box.width,
                              d.bounding_box.origin_y + d.bounding_box.height, size)]
    found = sum(any(_same(ours.boxes[i], ours.scores[i], names[i], d, px, tol) for d in theirs.detections) for i in ours_in)
    back = sum(any(_same(ours.boxes[i], ours.scores[i], names[i], d, px, tol) for i in range(len(ours.scores)))
               for d in theirs_in)
    return found / max(len(ours_in), 1), back / max(len(theirs_in), 1), len(ours_in)


def test_mediapipe_object_detector_matches_detect(nms_files, frames):
    """MediaPipe Tasks' ObjectDetector opens every --nms export and finds what `edgedet detect` finds."""
    import mediapipe as mp

    from edgedet.runtime import Detector

    od = _object_detector()
    from mediapipe.tasks.python.core.base_options import BaseOptions

    for key, path in nms_files.items():
        det = Detector.from_file(path, score_threshold=THRESHOLD)
        # MediaPipe keeps scores >= its threshold, the runtime scores > its threshold: the next
        # float up makes them the same rule (int8 scores can be exactly 0.5).
        opts = od.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path),
                                        score_threshold=float(np.nextafter(np.float32(THRESHOLD), np.float32(1))),
                                        max_results=-1)
        with od.ObjectDetector.create_from_options(opts) as mpd:
            for frame in frames:
                ours = det.detect(frame)
                theirs = mpd.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
                found, back, n = _match(ours, [det.labels[int(c)] for c in ours.classes], theirs, frame.shape[0])
                assert n > 0, key
                assert found == back == 1.0, (key, found, back)


def test_standard_metadata_only_file_runs(nms_files, frames, tmp_path):
    """A file written by MediaPipe's own writer (labels + normalisation, no edgedet.json) runs
    with what its standard fields say; malformed metadata is a one-line error naming the field."""
    _object_detector()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

    from edgedet.runtime import Detector

    labels = metadata_writer.Labels().add(["RBC", "WBC", "Platelets"])
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(_bare(nms_files["tflite-fp32"])), [127.0], [128.0], labels)
    data = bytes(writer.populate()[0])
    third = tmp_path / "third_party.tflite"
    third.write_bytes(data)
    assert read_metadata(str(third)) is None
    det = Detector.from_file(str(third), score_threshold=THRESHOLD)
    assert list(det.labels) == ["RBC", "WBC", "Platelets"] and det.meta.mean == (127.0,) * 3 and det.meta.std == (128.0,) * 3
    ref = Detector.from_file(nms_files["tflite-fp32"], score_threshold=THRESHOLD)
    a, b = det.detect(frames[0]), ref.detect(frames[0])
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data.replace(b"M001", b"M00X", 1))
    with pytest.raises(ModelFileError, match="ModelMetadata") as e:
        Detector.from_file(str(bad))
    assert "\n" not in str(e.value)


def test_malformed_edgedet_json_names_the_field(nms_files, tmp_path):
    meta = json.loads(read_metadata(nms_files["tflite-fp16"]).to_json())
    del meta["input_size"]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(_bare(nms_files["tflite-fp16"]))
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("edgedet.json", json.dumps(meta))
    with pytest.raises(ModelFileError, match="input_size") as e:
        read_metadata(str(bad))
    assert "\n" not in str(e.value)
