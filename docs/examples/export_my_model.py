"""Export a multi-exit PyTorch model to the ONNX file edgeexit compiles: the code of
docs/bring-your-own-model.md, runnable as it stands.

    /usr/bin/python3 docs/examples/export_my_model.py --out my_model.onnx

Runs with Debian's python3-torch (1.13) and python3-onnx (apt-get install python3-torch
python3-onnx). The model below is untrained (fixed seed): it shows the shape of the contract,
not accuracy. Put your own trained nn.Module in its place; keep what forward() returns,
the export call and the metadata.
"""
import argparse
import json
import os

import onnx
import torch
import torch.nn as nn

# Class names in the order of the logits. These are the folder names of the Fashion-MNIST
# calibration set shipped with edgeexit (calibration/fashion-mnist), so this model calibrates
# on it. An ImageFolder subfolder is matched to a label by the label's name with '/' and '\'
# replaced by '_'.
LABELS = ["tshirt_top", "trouser", "pullover", "dress", "coat",
          "sandal", "shirt", "sneaker", "bag", "ankle_boot"]

# How an image becomes the input tensor: x = (pixel * scale - mean[c]) / std[c], NCHW float32.
# "resize" says how an image of another aspect ratio is fitted (stretch, cover or contain).
PREPROCESS = {"colorspace": "gray", "size": [28, 28], "scale": 1.0 / 255.0,
              "mean": [0.2860], "std": [0.3530], "resize": "stretch"}

# Exit names, cheapest first: the order forward() returns them and edgeexit runs them.
EXITS = ["exit0", "exit1", "final"]


def conv_bn(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise then 1x1 pointwise convolution."""

    def __init__(self, cin, cout, stride=1):
        super().__init__(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def head(channels, classes):
    """Global average pool and a linear layer: logits, no softmax."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


class TinyMultiExit(nn.Module):
    def __init__(self, classes=len(LABELS)):
        super().__init__()
        self.stem = conv_bn(1, 8, 3)
        self.block1 = DepthwiseSeparable(8, 16, stride=2)
        self.block2 = nn.Sequential(Residual(DepthwiseSeparable(16, 16)), DepthwiseSeparable(16, 32, stride=2))
        self.head0 = head(8, classes)
        self.head1 = head(16, classes)
        self.head2 = head(32, classes)

    def forward(self, x):
        # Every exit returns logits; edgeexit applies its own (temperature-scaled) softmax.
        x = self.stem(x)
        e0 = self.head0(x)
        x = self.block1(x)
        e1 = self.head1(x)
        x = self.block2(x)
        return e0, e1, self.head2(x)


def export(model, path, name, version):
    model.eval()  # BatchNorm uses its running statistics (and folds into the convolutions)
    h, w = PREPROCESS["size"]
    channels = 1 if PREPROCESS["colorspace"] == "gray" else 3
    dummy = torch.zeros(1, channels, h, w)
    # Dynamic batch axis on the input and on every exit: the runtime batches images.
    axes = {"image": {0: "batch"}, **{e: {0: "batch"} for e in EXITS}}
    tmp = path + ".tmp"
    torch.onnx.export(model, dummy, tmp, input_names=["image"], output_names=EXITS,
                      dynamic_axes=axes, opset_version=13, do_constant_folding=True)
    m = onnx.load(tmp)
    meta = {
        "edgeexit.preprocess": json.dumps(PREPROCESS),
        "edgeexit.labels": json.dumps(LABELS),
        "edgeexit.model": name,
        "edgeexit.version": version,
    }
    for key, value in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(m)
    onnx.save(m, tmp)
    # Written whole or not at all: a reader never sees half a model.
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="my_model.onnx")
    p.add_argument("--name", default="tiny-multi-exit")
    p.add_argument("--version", default="0.1.0")
    a = p.parse_args()
    torch.manual_seed(0)
    export(TinyMultiExit(), a.out, a.name, a.version)
    print(f"wrote {a.out}: exits {', '.join(EXITS)}; {len(LABELS)} labels")


if __name__ == "__main__":
    main()
