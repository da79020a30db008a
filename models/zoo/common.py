"""Shared pieces of the edgeexit reference zoo: Fashion-MNIST loading from Debian's
dataset-fashion-mnist, the fixed calibration hold-out split, evaluation and ONNX export with
edgeexit's self-describing metadata.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, python3-onnx), never the pyenv python.
"""
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
CALIB_DIR = os.path.join(ROOT, "calibration", "fashion-mnist")
SPLIT_FILE = os.path.join(CALIB_DIR, "split.json")

# Folder-safe class names (ImageFolder folders are named by class; "T-shirt/top" has a slash).
LABELS = ["tshirt_top", "trouser", "pullover", "dress", "coat",
          "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
# Mean/std of the Fashion-MNIST training pixels scaled to [0, 1] (computed by `stats` below).
MEAN = 0.2860
STD = 0.3530
PREPROCESS = {"colorspace": "gray", "size": [28, 28], "scale": 1.0 / 255.0,
              "mean": [MEAN], "std": [STD]}
CALIB_PER_CLASS = 300
SEED = 20261126


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    return x, y.astype(np.int64)


def calibration_indices(y_train):
    """The training images held out for calibration: CALIB_PER_CLASS per class, fixed seed.
    Written once to calibration/fashion-mnist/split.json so every later step agrees."""
    if os.path.exists(SPLIT_FILE):
        with open(SPLIT_FILE) as f:
            return np.array(json.load(f)["trainIndices"], dtype=np.int64)
    rng = np.random.default_rng(SEED)
    picks = []
    for c in range(10):
        idx = np.flatnonzero(y_train == c)
        picks.extend(sorted(rng.choice(idx, CALIB_PER_CLASS, replace=False).tolist()))
    picks = sorted(picks)
    os.makedirs(CALIB_DIR, exist_ok=True)
    with open(SPLIT_FILE, "w") as f:
        json.dump({"source": "Fashion-MNIST train split (Debian dataset-fashion-mnist)",
                   "seed": SEED, "perClass": CALIB_PER_CLASS,
                   "note": "held out from training; never the test split",
                   "trainIndices": picks}, f)
    return np.array(picks, dtype=np.int64)


def to_tensor(x_uint8):
    x = torch.from_numpy(x_uint8.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - MEAN) / STD


def training_data():
    x, y = load_split("train")
    held = calibration_indices(y)
    mask = np.ones(len(y), dtype=bool)
    mask[held] = False
    return to_tensor(x[mask]), torch.from_numpy(y[mask]), to_tensor(x[held]), torch.from_numpy(y[held])


def test_data():
    x, y = load_split("test")
    return to_tensor(x), torch.from_numpy(y)


def count_macs(model, example):
    """MACs per Conv/ConvTranspose/Linear for one sample (batch 1), via forward hooks."""
    macs = {}

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
                macs[name] = int(out[0].numel() * k)
            elif isinstance(mod, nn.ConvTranspose2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.out_channels // mod.groups)
                macs[name] = int(inp[0][0].numel() * k)
            elif isinstance(mod, nn.Linear):
                macs[name] = int(mod.in_features * mod.out_features)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    with torch.no_grad():
        model(example)
    for h in handles:
        h.remove()
    return macs


def add_metadata(path, extra=None):
    import onnx
    m = onnx.load(path)
    props = {"edgeexit.preprocess": json.dumps(PREPROCESS), "edgeexit.labels": json.dumps(LABELS)}
    props.update(extra or {})
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)


def export_onnx(model, path, output_names, extra_meta=None, input_name="image"):
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    axes = {input_name: {0: "batch"}}
    for n in output_names:
        axes[n] = {0: "batch"}
    torch.onnx.export(model, dummy, path, input_names=[input_name], output_names=output_names,
                      dynamic_axes=axes, opset_version=13, do_constant_folding=True)
    add_metadata(path, extra_meta)


class Timer:
    def __init__(self):
        self.t0 = time.time()

    def seconds(self):
        return time.time() - self.t0


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
