"""Build the ResNet-style model that `npm run bench` splits to measure what stage boundaries cost
(one-off; the output is committed, the tests and the bench never train).

    /usr/bin/python3 scripts/make-resnet-bench.py

Needs Debian's python3-torch (1.13) and python3-onnx (1.12): use /usr/bin/python3, not the pyenv
python3 on PATH. Seeded, so a rerun gives the same weights.

test/fixtures/compiler/resnet-bench.onnx: Fashion-MNIST's input (1x28x28 grey, the zoo's
preprocessing and labels in the metadata, so the calibration images compile it to int8) through a
stem and three residual stages (16 channels at 28x28, 32 at 14x14, 48 at 7x7; stride-2 3x3
convolutions between them), each block Conv-BN-ReLU-Conv-BN + identity Add + ReLU, with an exit
(GlobalAveragePool + Gemm) after each stage: 'exit_0', 'exit_1', 'exit_2'. BatchNormalization
stays in the graph (TrainingMode.PRESERVE) so the compiler folds it, as it must for any such
export; the split's boundaries sit right after a residual Add + ReLU. The weights are random
(BatchNorm statistics included): timing needs the shapes, not accuracy.
"""
import json
import os
import sys

import onnx
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from zoo.common import LABELS, PREPROCESS  # noqa: E402

OUT = os.path.join(ROOT, "test", "fixtures", "compiler", "resnet-bench.onnx")


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = conv_bn(c, c)
        self.b = conv_bn(c, c)

    def forward(self, x):
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class Stage(nn.Module):
    """Optional stride-2 entry convolution, two residual blocks, and an exit head."""

    def __init__(self, cin, c, down):
        super().__init__()
        self.entry = nn.Sequential(conv_bn(cin, c, 2 if down else 1), nn.ReLU())
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.head = nn.Linear(c, len(LABELS))

    def forward(self, x):
        h = self.blocks(self.entry(x))
        return h, self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class ResNetExits(nn.Module):
    def __init__(self):
        super().__init__()
        self.s0 = Stage(1, 16, False)
        self.s1 = Stage(16, 32, True)
        self.s2 = Stage(32, 48, True)

    def forward(self, x):
        h, e0 = self.s0(x)
        h, e1 = self.s1(h)
        _, e2 = self.s2(h)
        return e0, e1, e2


def randomize_bn(module, gen):
    # Fresh BatchNorm layers are the identity: folding them would change nothing.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.3)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


def main():
    torch.manual_seed(17)
    gen = torch.Generator().manual_seed(17)
    model = ResNetExits()
    randomize_bn(model, gen)
    model.eval()
    names = ["exit_0", "exit_1", "exit_2"]
    axes = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), OUT, input_names=["image"], output_names=names,
                      dynamic_axes=axes, opset_version=13, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load(OUT)
    props = {"edgeexit.preprocess": json.dumps(PREPROCESS), "edgeexit.labels": json.dumps(LABELS),
             "edgeexit.model": "resnet-bench", "edgeexit.version": "1"}
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, OUT)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {sum(1 for n in m.graph.node if n.op_type == 'BatchNormalization')} BatchNormalization nodes)")


if __name__ == "__main__":
    main()
