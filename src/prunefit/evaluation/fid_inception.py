"""The FID Inception-v3 of pytorch-fid as clean-fid's ``legacy_pytorch`` mode runs it: network, weights, input.

Pure torch (no torchvision). The network is pytorch-fid's ``fid_inception_v3`` (torchvision's Inception3 with the
TF-ported "FIDInception" blocks: average pools that skip the zero padding, a max pool in the last block), cut at the
final average pool: 2048-d features. The parameter names are torchvision's, so pytorch-fid's weights file
``pt_inception-2015-12-05-6726825d.pth`` (and torch-fidelity's, which has the same keys) loads strictly. The input
handling is clean-fid 0.1.35's ``legacy_pytorch``: each image, as float in [0, 255], is resized on its own with
``F.interpolate(bilinear, align_corners=False)`` (no antialias) to 299 x 299, clipped to [0, 255] and not
quantized; the network then sees ``2 * (x / 255) - 1``. tests/test_fid_modes.py pins all of it against clean-fid
0.1.35 + torch-fidelity 0.4.0 run from their wheels.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunefit.errors import ModelLoadError

INPUT_SIZE = 299
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
WEIGHTS_SHA256_PREFIX = "6726825d"
"""torch.hub's convention: a file name's hash suffix is the start of the file's sha256."""
RESIZE = "bilinear to 299x299 (torch F.interpolate, align_corners=False, no antialias), float, clipped, not quantized"


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, torchvision's block."""

    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, Cin, H, W] -> [N, Cout, H', W']."""
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 average pool: padded zeros are not counted (pytorch-fid's patch)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """pytorch-fid's FIDInceptionA: torchvision's InceptionA with the TF average pool."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches, concatenated: [N, Cin, 35, 35] -> [N, 224 + pool_features, 35, 35]."""
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grid reduction: [N, 288, 35, 35] -> [N, 768, 17, 17]."""
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches, concatenated: [N, 768, 17, 17] -> [N, 768, 17, 17]."""
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grid reduction: [N, 768, 17, 17] -> [N, 1280, 8, 8]."""
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (``max_pool=False``: TF average pool) or FIDInceptionE_2 (``max_pool=True``:
    the FID graph's max pool in the last block)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches, concatenated: [N, Cin, 8, 8] -> [N, 2048, 8, 8]."""
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_tf(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 up to the final average pool: [N, 3, 299, 299] in [-1, 1] -> [N, 2048].
    ``fc`` (2048 -> 1008) is kept only so the weights file loads strictly; it is not used."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, 32)
        self.Mixed_5c = FIDInceptionA(256, 64)
        self.Mixed_5d = FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, 128)
        self.Mixed_6c = FIDInceptionC(768, 160)
        self.Mixed_6d = FIDInceptionC(768, 160)
        self.Mixed_6e = FIDInceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features: [N, 3, 299, 299] in [-1, 1] -> [N, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def legacy_pytorch_resize(image: np.ndarray) -> torch.Tensor:
    """clean-fid's legacy_pytorch resize of one HxWx3 uint8 image -> float32 [3, 299, 299] in [0, 255]."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x[0].clamp(0, 255)


def legacy_pytorch_normalize(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, 299, 299] in [0, 255] -> the network's input: clean-fid's ``x / 255``, then pytorch-fid's ``2x - 1``."""
    x = x / 255
    return 2 * x - 1


def default_weights_path() -> Path:
    """Where pytorch-fid (through torch.hub) keeps its weights: $TORCH_HOME/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random weights state of the network (He-normal convs, BN in its identity state): tests and CPU smoke
    runs, never a reported number. Made once per process and seed (a new dict of the same tensors each call)."""
    return dict(_random_state(seed))


@functools.lru_cache(maxsize=2)
def _random_state(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FIDInceptionV3()
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_identity(path: Path) -> str:
    """A weights file's name in the protocol: the FID weights by their hash, else 'custom <name> sha256 <hash>'."""
    digest = file_sha256(path)
    if digest.startswith(WEIGHTS_SHA256_PREFIX):
        return f"pt_inception-2015-12-05 (sha256 {digest[:16]})"
    return f"custom {path.name} (sha256 {digest[:16]}): not the FID Inception weights"


def load_fid_inception(weights: Optional[str]) -> tuple[FIDInceptionV3, str]:
    """The network in eval mode and its weights' identity. ``weights``: a file, ``random`` (labelled as such),
    or None = the torch.hub cache path pytorch-fid uses."""
    with torch.device("meta"):  # no init: every tensor comes from the state (assign=True), checked strictly
        net = FIDInceptionV3()
    if weights == "random":
        net.load_state_dict(random_state_dict(0), assign=True)
        return net.eval().requires_grad_(False), "random (seed 0): NOT the FID Inception weights, not comparable"
    path = Path(weights) if weights else default_weights_path()
    if not path.is_file():
        where = f"fid.weights={weights}" if weights else f"the torch hub cache ({path})"
        raise ModelLoadError(f"FID Inception weights not found at {where}; download {WEIGHTS_URL} there "
                             "(or set fid.weights=FILE)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, assign=True)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not pytorch-fid's Inception weights file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160]})") from None
    return net.eval().requires_grad_(False), weights_identity(path)
