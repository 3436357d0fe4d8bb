import os

import torch

# Without a GPU the Triton kernels run through the interpreter; it must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from torch import nn


def conv_bn(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    """A padded 3x3 convolution and its batch norm (unpack into an ``nn.Sequential``)."""
    return [nn.Conv2d(in_ch, out_ch, 3, stride, 1), nn.BatchNorm2d(out_ch)]


class SmallCNN(nn.Module):
    """Tiny conv net (two conv stages, GAP, Linear) that makes Score-CAM parity tests affordable."""

    def __init__(self, in_ch: int = 3, num_classes: int = 10, dims: int = 2) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims]
        self.features = nn.Sequential(
            conv(in_ch, 8, 3, padding=1),
            nn.ReLU(),
            conv(8, 12, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            conv(12, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = pool(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def random_batch_norm(model: nn.Module, mean_range: float = 1.0) -> nn.Module:
    """``model`` with random BN running statistics (mean ~ U(-r, r), var ~ U(0.5, 2)), its mode unchanged: BN folding
    and the statistics then matter, unlike with the default zeros and ones."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-mean_range, mean_range)
            module.running_var.uniform_(0.5, 2)
    return model


@pytest.fixture
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on 2 shared cores,
    two OpenMP threads run the model-heavy parity suites several times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
