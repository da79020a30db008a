"""fmnist-branchy: a BranchyNet-style CNN with three exits for Fashion-MNIST.

Exit 0 is deliberately tiny (one conv + a linear head) so that it is also CBNet's lightweight
classifier; the full network costs ~39x its MACs. Trained with a weighted sum of the exits'
cross-entropy losses (BranchyNet), Adam 1e-3.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def conv_head():
    """The stronger exit-0 head: one stride-2 Conv 16→32 (+BN, ReLU) before the linear layer.
    Trained on the frozen trunk (train.py branchy-head), so exits 1 and 2 are unchanged."""
    return nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))  # 32x7x7


class Stage1(nn.Module):
    """Backbone stage 1 + exit 0: CBNet's lightweight classifier on its own. `head`: "linear"
    (Flatten, Linear 3136→10, as first trained) or "conv" (conv_head)."""

    def __init__(self, head="linear"):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 16), nn.MaxPool2d(2))  # 16x14x14
        self.head_kind = head
        self.head = conv_head() if head == "conv" else nn.Linear(16 * 14 * 14, 10)

    def forward(self, x):
        h = self.features(x)
        return h, self.head(h if self.head_kind == "conv" else torch.flatten(h, 1))


class BranchyNet(nn.Module):
    """`width` is stage 3's channel count: 64 for fmnist-branchy; fmnist-branchy-wide uses 128,
    which makes the last stage ~4x costlier (exits 0 and 1 unchanged), closer to the share of
    the work a real backbone's deep layers hold."""

    def __init__(self, width=64, exit0="linear"):
        super().__init__()
        self.stage1 = Stage1(exit0)
        self.stage2 = nn.Sequential(conv_bn(16, 32), conv_bn(32, 32), nn.MaxPool2d(2))  # 32x7x7
        self.head2 = nn.Linear(32 * 7 * 7, 10)
        self.stage3 = nn.Sequential(conv_bn(32, width), conv_bn(width, width), nn.MaxPool2d(2))  # width x3x3
        self.head3 = nn.Sequential(nn.Flatten(), nn.Linear(width * 3 * 3, 128), nn.ReLU(), nn.Dropout(0.3),
                                   nn.Linear(128, 10))

    def forward(self, x):
        h1, e0 = self.stage1(x)
        h2 = self.stage2(h1)
        e1 = self.head2(torch.flatten(h2, 1))
        e2 = self.head3(self.stage3(h2))
        return e0, e1, e2


class LightClassifier(nn.Module):
    """Exports stage 1 + exit 0 alone (the CBNet lightweight classifier)."""

    def __init__(self, stage1):
        super().__init__()
        self.stage1 = stage1

    def forward(self, x):
        return self.stage1(x)[1]


EXIT_WEIGHTS = (0.6, 0.8, 1.0)


def loss_fn(outputs, y):
    return sum(w * F.cross_entropy(o, y) for w, o in zip(EXIT_WEIGHTS, outputs))
