"""Build the small ONNX models that test/onnx uses (one-off; the outputs are committed).

    /usr/bin/python3 scripts/make-onnx-fixtures.py

Needs Debian's python3-torch and python3-onnx (use /usr/bin/python3, not a pyenv python). The
tests never run this: they read the committed files under test/fixtures/onnx/. Seeds are fixed
so that rerunning it gives the same weights (torch may still change a byte or two of metadata).

Fixtures:
  tiny-2exit.onnx        Conv/BatchNormalization/Relu/MaxPool trunk, two Flatten+Gemm exits, batch
                         dynamic; BN kept (exported with TrainingMode.PRESERVE).
  residual-gap.onnx      residual Add, GlobalAveragePool head and a ReduceMean head; the second head
                         flattens with x.view(x.size(0), -1), so torch emits Shape/Gather/Unsqueeze/
                         Concat feeding a Reshape.
  external-data.onnx     a Conv + Gemm model saved with its larger tensors in external-data.bin;
                         external-data.expected.json holds what onnx.load reads for each tensor.
  cost-ops.onnx          built with onnx.helper: grouped strided Conv, ConvTranspose, Reshape, MatMul,
                         with MACs that test/onnx/cost.test.ts checks by hand.
"""
import json
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", "onnx")


def randomize_bn(module, gen):
    # Fresh BatchNorm layers have mean 0 / var 1, which would hide a BN that was dropped or folded.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


class TinyTwoExit(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.exit0 = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.exit1 = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def forward(self, x):
        h = self.block1(x)
        return self.exit0(h), self.exit1(self.block2(h))


class ResidualGap(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.branch(h))
        pooled = self.gap(h)
        logits = self.fc(pooled.view(pooled.size(0), -1))
        return logits, h.mean(dim=(2, 3))


class SmallExternal(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def export(model, dummy, path, input_names, output_names):
    model.eval()
    axes = {n: {0: "batch"} for n in input_names + output_names}
    torch.onnx.export(model, dummy, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=axes, opset_version=13, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load(path)
    entry = m.metadata_props.add()
    entry.key, entry.value = "edgeexit.fixture", os.path.basename(path)
    onnx.checker.check_model(m)
    return m


def tiny_two_exit():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = TinyTwoExit()
    with torch.no_grad():
        randomize_bn(model, gen)
    path = os.path.join(OUT, "tiny-2exit.onnx")
    m = export(model, torch.zeros(1, 1, 16, 16), path, ["image"], ["exit_0", "exit_1"])
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("BatchNormalization") == 2, ops
    onnx.save(m, path)


def residual_gap():
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = ResidualGap()
    with torch.no_grad():
        randomize_bn(model, gen)
    path = os.path.join(OUT, "residual-gap.onnx")
    m = export(model, torch.zeros(1, 3, 8, 8), path, ["image"], ["logits", "mean"])
    ops = [n.op_type for n in m.graph.node]
    for op in ("Add", "GlobalAveragePool", "ReduceMean", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape"):
        assert op in ops, (op, ops)
    onnx.save(m, path)


def external_data():
    torch.manual_seed(3)
    model = SmallExternal()
    path = os.path.join(OUT, "external-data.onnx")
    m = export(model, torch.zeros(1, 2, 6, 6), path, ["image"], ["logits"])
    data_name = "external-data.bin"
    data_path = os.path.join(OUT, data_name)
    if os.path.exists(data_path):
        os.remove(data_path)  # onnx appends to an existing file
    # Small threshold so that both weights (576 and 4608 bytes) go external, at two offsets in one
    # file, while the biases stay inline.
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=256)
    onnx.checker.check_model(path)
    # Values to check our external-data loader against, computed by onnx's own loader.
    loaded = onnx.load(path)
    expected = {}
    for t in loaded.graph.initializer:
        a = numpy_helper.to_array(t).astype(np.float64)
        expected[t.name] = {"dims": list(t.dims), "sum": float(a.sum()), "first": [float(x) for x in a.ravel()[:4]],
                            "last": float(a.ravel()[-1])}
    with open(os.path.join(OUT, "external-data.expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


def cost_ops():
    rng = np.random.default_rng(4)

    def init(name, shape, dtype=np.float32):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(dtype), name)

    nodes = [
        # [1,4,8,8] -> [1,6,4,4]: groups of 2 input channels, stride 2.
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_g2", group=2, strides=[2, 2],
                         pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        # [1,6,4,4] -> [1,3,8,8]
        helper.make_node("ConvTranspose", ["r1", "w2"], ["t1"], name="deconv", strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("Reshape", ["t1", "shape"], ["flat"], name="reshape"),
        # [1,3,64] x [64,5] -> [1,3,5]
        helper.make_node("MatMul", ["flat", "w3"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes, "cost_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5])],
        [init("w1", (6, 2, 3, 3)), init("b1", (6,)), init("w2", (6, 3, 2, 2)),
         numpy_helper.from_array(np.array([1, 3, 64], dtype=np.int64), "shape"), init("w3", (64, 5))],
    )
    m = helper.make_model(graph, producer_name="edgeexit-fixtures", opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(OUT, "cost-ops.onnx"))


def main():
    os.makedirs(OUT, exist_ok=True)
    tiny_two_exit()
    residual_gap()
    external_data()
    cost_ops()
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
