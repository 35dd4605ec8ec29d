"""A standard 4-output detection .tflite (boxes, classes, scores, count) runs through Detector.

The file is built here from a tiny Keras model whose outputs have the TFLite_Detection_PostProcess
shapes and semantics (normalised ymin,xmin,ymax,xmax boxes; float class ids; scores; count), in
the scrambled order TF2 converters produce (scores, boxes, count, classes) with uninformative
names, plus a TFLite-Support style labels.txt (background entry first) in an appended zip.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from edgedet.errors import ModelFileError

pytestmark = pytest.mark.slow

BOXES = [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.9, 0.7], [0.2, 0.2, 0.3, 0.3], [0, 0, 0, 0]]
CLASSES = [1.0, 2.0, 0.0, 1.0, 0.0]
SCORES = [0.95, 0.75, 0.55, 0.2, 0.0]
COUNT = 4.0


@pytest.fixture(scope="module")
def nms_tflite(tmp_path_factory):
    pytest.importorskip("tensorflow")
    import tensorflow as tf
    import tf_keras as keras

    from edgedet.convert.tflite_converter import keras_to_tflite

    inp = keras.Input((64, 64, 3), batch_size=1, name="images")
    zero = keras.layers.Lambda(lambda x: tf.reduce_mean(x, axis=[1, 2, 3]) * 0.0)(inp)  # (1,), keeps outputs input-dependent

    def const(values, name):
        c = tf.constant([values], tf.float32)
        return keras.layers.Lambda(lambda z: tf.reshape(z, [-1] + [1] * (len(c.shape) - 1)) + c, name=name)(zero)

    outs = [const(SCORES, "out_a"), const(BOXES, "out_b"), keras.layers.Lambda(lambda z: z + COUNT, name="out_c")(zero),
            const(CLASSES, "out_d")]
    model = keras.Model(inp, outs)
    path = tmp_path_factory.mktemp("nms") / "ssd_like.tflite"
    data = keras_to_tflite(model, "fp32")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labelmap.txt", "???\ncat\ndog\nbird\n")
    path.write_bytes(data + buf.getvalue())
    return str(path)


def test_four_output_tflite_with_zip_labels(nms_tflite):
    from edgedet.runtime.detector import Detector

    with pytest.raises(ModelFileError, match="--mean and --std"):
        Detector.from_file(nms_tflite)  # float input, no metadata: normalisation must be given
    det = Detector.from_file(nms_tflite, mean=0, std=1, score_threshold=0.3)
    assert det.meta.outputs == "nms" and det.labels == ("cat", "dog", "bird")
    img = np.zeros((200, 400, 3), np.uint8)
    d = det.detect(img)
    assert d.scores.tolist() == pytest.approx([0.95, 0.75, 0.55])
    assert [d.label(i) for i in range(len(d))] == ["dog", "bird", "cat"]
    # normalised (ymin, xmin, ymax, xmax) on a stretched input -> xyxy in the 400x200 image
    np.testing.assert_allclose(d.boxes[0], [0.2 * 400, 0.1 * 200, 0.6 * 400, 0.5 * 200], atol=1e-3)
    np.testing.assert_allclose(d.boxes[1], [0, 0, 400, 200], atol=1e-3)
    det.max_detections = 1
    assert len(det.detect(img)) == 1


def test_four_output_tflite_labels_file_and_our_metadata(nms_tflite, tmp_path):
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.metadata import ModelMeta, embed_tflite

    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\n")
    det = Detector.from_file(nms_tflite, labels=str(labels), mean=0, std=1)
    assert det.labels == ("zero", "one", "two")
    # ours, exported with --nms: edgedet metadata says outputs="nms" and letterbox resize
    ours = tmp_path / "ours_nms.tflite"
    ours.write_bytes(open(nms_tflite, "rb").read())
    embed_tflite(str(ours), ModelMeta(labels=["a", "b", "c"], input_size=(64, 64), mean=(0, 0, 0), std=(1, 1, 1),
                                      outputs="nms", target="tflite-fp32"))
    det = Detector.from_file(ours, score_threshold=0.3)
    d = det.detect(np.zeros((100, 200, 3), np.uint8))  # letterbox scale 64/200 = 0.32
    assert d.label(0) == "b"
    np.testing.assert_allclose(d.boxes[0], [0.2 * 64 / 0.32, 0.1 * 64 / 0.32, 0.6 * 64 / 0.32, 100], atol=1e-3)


def test_our_nms_export_matches_raw_outputs(rt_models, rt_image):
    """`edgedet convert --nms` (real TFLite_Detection_PostProcess) agrees with the raw model + our NMS."""
    from edgedet.runtime.detector import Detector

    nms_det = Detector.from_file(rt_models.tflite("fp32", nms=True), score_threshold=0.3)
    assert nms_det.meta.outputs == "nms" and nms_det.labels == ("red", "white", "platelet")
    got = nms_det.detect(rt_image)
    raw = Detector.from_file(rt_models.tflite("fp32"), score_threshold=0.3, nms="global").detect(rt_image)
    assert len(got) > 0
    # The op's "fast" NMS is class-agnostic over each anchor's best class: the strongest
    # detections are the same boxes, in the original image's pixels.
    k = min(3, len(got), len(raw))
    np.testing.assert_array_equal(got.classes[:k], raw.classes[:k])
    np.testing.assert_allclose(got.boxes[:k], raw.boxes[:k], atol=1.0)
    np.testing.assert_allclose(got.scores[:k], raw.scores[:k], atol=1e-3)
