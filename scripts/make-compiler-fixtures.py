"""Build the small ONNX models that test/compiler uses (one-off; the outputs are committed).

    /usr/bin/python3 scripts/make-compiler-fixtures.py

Needs Debian's python3-torch (1.13) and python3-onnx (1.12): use /usr/bin/python3, not the pyenv
python3 on PATH. The tests never run this; they read the committed files under
test/fixtures/compiler/. Seeds are fixed, so a rerun gives the same weights.

Neither model carries edgeexit metadata (no edgeexit.preprocess / edgeexit.labels), so the tests
must pass --preprocess and --labels; the matching files are written next to the models.

Fixtures:
  resnet-exits.onnx   a ResNet-style net with three exits, not from our zoo. Exported with
                      TrainingMode.PRESERVE so every BatchNormalization stays in the graph (the
                      compiler must fold them). Residual Adds; exit 'head/aux:0' is
                      GlobalAveragePool + Flatten + Gemm; exit 'mid.logits' is ReduceMean + MatMul
                      (+ Add); exit 'logits.final' concatenates the stage-0 pooled features with the
                      last block's features flattened by feat.view(x.size(0), -1), where x is the
                      *image*: torch emits Shape(image) -> Gather -> Unsqueeze -> Concat -> Reshape,
                      which would force the image to be handed to the last stage unless the
                      compiler folds the chain. The pooled stage-0 tensor is carried past stage 1
                      untouched, so stage 1 must pass it on.
  single-exit.onnx    one output ('scores'), Conv + BN + Relu + MaxPool + Flatten + Gemm, gray input.
  *.labels.txt        one class name per line.
  *.preprocess.json   the preprocess spec for --preprocess.
  images/<class>/*.png  a tiny ImageFolder (2 random 16x16 RGB images per resnet-exits class) for
                      `compile --calibration`.
"""
import json
import os

import numpy as np
import onnx
import torch
from PIL import Image
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", "compiler")


def randomize_bn(module, gen):
    # Fresh BatchNorm layers have mean 0 / var 1 / weight 1 / bias 0: folding them would change
    # nothing and a wrong fold would go unnoticed.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.3)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


def conv_bn(cin, cout, stride=1, bias=False):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = conv_bn(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=True), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.b(self.a(x)))


class ResNetExits(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)                      # 8 x 16 x 16
        self.block1 = ResBlock(8)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.aux = nn.Linear(8, 5)                     # Gemm
        self.down2 = conv_bn(8, 16, stride=2)          # 16 x 8 x 8
        self.block2 = ResBlock(16)
        self.mid_w = nn.Parameter(torch.randn(16, 5) * 0.3)  # MatMul head
        self.mid_b = nn.Parameter(torch.randn(5) * 0.1)
        self.down3 = conv_bn(16, 16, stride=2)         # 16 x 4 x 4
        self.block3 = ResBlock(16)
        self.drop = nn.Dropout(0.5)
        self.final = nn.Linear(16 * 4 * 4 + 8, 5)

    def forward(self, x):
        h1 = self.block1(self.stem(x))
        pooled = torch.flatten(self.gap(h1), 1)        # GlobalAveragePool + Flatten
        aux = self.aux(pooled)
        h2 = self.block2(self.down2(h1))
        mid = torch.matmul(h2.mean(dim=(2, 3)), self.mid_w) + self.mid_b   # ReduceMean + MatMul + Add
        h3 = self.block3(self.down3(h2))
        flat = h3.view(x.size(0), -1)                  # Shape(image) -> Gather -> ... -> Reshape
        final = self.final(self.drop(torch.cat([flat, pooled], dim=1)))
        return aux, mid, final


class SingleExit(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 6, bias=True), nn.MaxPool2d(2))  # 6 x 6 x 6
        self.fc = nn.Linear(6 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def export(model, dummy, path, input_name, output_names):
    model.eval()
    axes = {n: {0: "batch"} for n in [input_name] + output_names}
    # PRESERVE keeps BatchNormalization nodes (EVAL would fold them into the convs).
    torch.onnx.export(model, dummy, path, input_names=[input_name], output_names=output_names,
                      dynamic_axes=axes, opset_version=13, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load(path)
    del m.metadata_props[:]
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return m


def add_identity_and_dropout(m):
    """torch drops Dropout in eval mode and rarely emits Identity; put both back the way other
    exporters leave them: an inference-mode Dropout before the final Gemm, and an Identity that
    produces a graph output (so removing it must rename the producer, not the output)."""
    nodes = list(m.graph.node)
    final = [n for n in nodes if n.op_type == "Gemm" and n.output[0] == "logits.final"][0]
    drop = onnx.helper.make_node("Dropout", [final.input[0]], ["final_dropped"], name="final_dropout")
    final.input[0] = "final_dropped"
    aux = [n for n in nodes if n.op_type == "Gemm" and n.output[0] == "head/aux:0"][0]
    aux.output[0] = "aux_before_identity"
    ident = onnx.helper.make_node("Identity", ["aux_before_identity"], ["head/aux:0"], name="aux_identity")
    out = []
    for n in nodes:
        if n is final:
            out.append(drop)
        out.append(n)
        if n is aux:
            out.append(ident)
    del m.graph.node[:]
    m.graph.node.extend(out)


def write_side_files(stem, labels, preprocess):
    with open(os.path.join(OUT, stem + ".labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    with open(os.path.join(OUT, stem + ".preprocess.json"), "w") as f:
        json.dump(preprocess, f)
        f.write("\n")


def resnet_exits():
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    model = ResNetExits()
    with torch.no_grad():
        randomize_bn(model, gen)
    path = os.path.join(OUT, "resnet-exits.onnx")
    m = export(model, torch.zeros(1, 3, 16, 16), path, "image", ["head/aux:0", "mid.logits", "logits.final"])
    add_identity_and_dropout(m)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("BatchNormalization") == 9, ops
    for op in ("Identity", "Dropout", "Constant"):
        assert op in ops, (op, ops)
    for op in ("Add", "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Flatten", "Reshape", "Shape", "Gather",
               "Unsqueeze", "Concat"):
        assert op in ops, (op, ops)
    shape_nodes = [n for n in m.graph.node if n.op_type == "Shape"]
    assert any(n.input[0] == "image" for n in shape_nodes), "the Reshape chain must read the image"
    write_side_files("resnet-exits", ["cat", "dog", "bird", "frog", "ship"],
                     {"colorspace": "rgb", "size": [16, 16], "scale": 1 / 255,
                      "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]})


def single_exit():
    gen = torch.Generator().manual_seed(12)
    torch.manual_seed(12)
    model = SingleExit()
    with torch.no_grad():
        randomize_bn(model, gen)
    path = os.path.join(OUT, "single-exit.onnx")
    m = export(model, torch.zeros(1, 1, 12, 12), path, "pixels", ["scores"])
    ops = [n.op_type for n in m.graph.node]
    assert "BatchNormalization" in ops, ops
    write_side_files("single-exit", ["zero", "one", "two", "three"],
                     {"colorspace": "gray", "size": [12, 12], "scale": 1 / 255, "mean": [0.5], "std": [0.5]})


def image_folder():
    rng = np.random.default_rng(13)
    root = os.path.join(OUT, "images")
    for label in ["cat", "dog", "bird", "frog", "ship"]:
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for i in range(2):
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(os.path.join(root, label, f"{i}.png"))


def main():
    os.makedirs(OUT, exist_ok=True)
    resnet_exits()
    single_exit()
    image_folder()
    for name in sorted(os.listdir(OUT)):
        if name == "images":
            continue
        size = os.path.getsize(os.path.join(OUT, name))
        assert size < 300_000, (name, size)
        print(f"{name}: {size} bytes")


if __name__ == "__main__":
    main()
