"""fmnist-cbnet: CBNet's converting autoencoder (Mahmud et al., arXiv 2403.07036).

The converter maps any image to an "easy" image of the same class, which the lightweight
classifier (fmnist-branchy's stage 1 + exit 0, frozen) then classifies. Its output is already
normalised like the classifier's input, so the pair chains without extra preprocessing.
"""
import torch
import torch.nn as nn

from .common import MEAN, STD


class Reshape(nn.Module):
    # nn.Unflatten has no ONNX symbolic in torch 1.13; a view exports as Reshape.
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(-1, *self.shape)


class Converter(nn.Module):
    def __init__(self, latent=64):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16x14x14
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32x7x7
            nn.Conv2d(32, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),                   # 24x7x7
            nn.Flatten(), nn.Linear(24 * 7 * 7, latent), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 32 * 7 * 7), nn.ReLU(), Reshape(32, 7, 7),
            # Nearest upsampling + conv rather than ConvTranspose: the same job, and torch's CPU
            # ConvTranspose backward was 2.5x slower here (measured), which mattered on 2 cores.
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(32, 8, 3, padding=1), nn.ReLU(),  # 8x14x14
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(),  # 1x28x28 in [0,1]
        )

    def forward(self, x):
        return (self.decoder(self.encoder(x)) - MEAN) / STD


class LiteConverter(nn.Module):
    """A converter sized for a 5.6M-MAC backbone (about a sixth of its MACs): stride-2
    convolutions instead of full-resolution conv + pool, and a linear decoder straight to the
    28x28 image instead of upsampling convolutions. The targets are one prototype per class, so
    a linear map from the latent code can draw them; the encoder is where the work is."""

    def __init__(self, latent=64):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),   # 16x14x14
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),  # 32x7x7
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),            # 32x7x7
            nn.Flatten(), nn.Linear(32 * 7 * 7, latent), nn.ReLU(),
        )
        self.decoder = nn.Sequential(nn.Linear(latent, 28 * 28), nn.Sigmoid(), Reshape(1, 28, 28))

    def forward(self, x):
        return (self.decoder(self.encoder(x)) - MEAN) / STD


CONVERTERS = {"lite": LiteConverter, "full": Converter}


class Pipeline(nn.Module):
    def __init__(self, converter, classifier):
        super().__init__()
        self.converter, self.classifier = converter, classifier

    def forward(self, x):
        return self.classifier(self.converter(x))
