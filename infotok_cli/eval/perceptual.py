"""Perceptual distance: shift-tolerant LPIPS (ST-LPIPS, Ghildyal & Liu, ECCV 2022), defined here.

LPIPS compares two images through the feature maps of a CNN trunk: each of five layers is normalised
to unit length along the channels, the squared difference is weighted per channel by a learned 1x1
linear head, averaged over space, and the five layers are summed (0 = identical, larger = more
different). The shift-tolerant variant replaces the trunk's strided convolutions and max-pools by
stride-1 versions followed by blur-pooling (reflect padding, a [1 2 1] x [1 2 1] / 16 filter, stride 2),
so a one-pixel shift barely moves the score; its trunk and heads were trained together.

Weights, loaded without unpickling code:

* ``alex`` (default, 2.5 M parameters): shipped inside this package as safetensors, converted once
  from the ``alex_shift_tolerant.pth`` of the ``stlpips-pytorch`` 0.0.2 wheel (BSD 2-Clause; notice in
  ``perceptual_weights/LICENSE``) by ``scripts/convert_stlpips.py``; its SHA-256 is checked on load.
* ``vgg`` (14.7 M parameters, the paper's training loss): not shipped (59 MB). It is read from an
  installed ``stlpips-pytorch`` wheel (``pip install --no-deps stlpips-pytorch``), located with
  ``importlib.util.find_spec`` without importing that package (its import needs torchvision), and
  loaded with ``torch.load(..., weights_only=True)``.

Inputs are RGB in [-1, 1] ([N,3,H,W] tensors) or uint8 frames ([T,H,W,3] arrays, `frames_distance`,
processed in chunks of bounded size). Frames smaller than `min_size` cannot pass through the trunk.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

NETS = ("alex", "vgg")
DEFAULT_NET = "alex"
ALEX_WEIGHTS = Path(__file__).resolve().parent.parent / "perceptual_weights" / "stlpips-alex.safetensors"
ALEX_SHA256 = "204003d6c20af24a421e4c37bbc336cfff644ea6a7fa447f82fc8e8d03d9695d"
VGG_IN_WHEEL = ("weights", "vST0.0", "vgg_shift_tolerant.pth")  # relative to the stlpips_pytorch package
_MAX_WEIGHTS_BYTES = 128 << 20  # both official files are under 60 MB: anything larger is not one of them
# Pixels (frames x H x W) per trunk pass. The AlexNet trunk's first layer holds 64 float32 channels at
# full resolution (and a padded copy), ~0.6 KB per pixel: a chunk of four 256x256 frames peaks near
# 160 MB; one 1280x720 frame (a chunk is never less than a frame) near 0.55 GB.
CHUNK_PIXELS = 4 * 256 * 256
# Reference features kept by ReferenceScorer: ~11 MB per 256x256 frame, so 512 MiB holds 47 such frames.
CACHE_BYTES = 512 << 20

# Per-channel shift and scale of LPIPS v0.1 (inputs in [-1, 1] mapped to ImageNet statistics); the
# same values are stored in both weight files and checked on load.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class PerceptualError(ValueError):
    """A one-line, user-facing problem with the perceptual metric's weights or inputs."""


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 2 on every side, depthwise 3x3 binomial blur."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / 16
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class MaxPool1(nn.Module):
    """k x k max-pool at stride 1 without padding, as separable maxima of shifted views: the same values
    as nn.MaxPool2d(k, 1), several times faster on the CPU (no argmax indices are kept)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, h, w = self.k, x.shape[2], x.shape[3]
        r = x[:, :, :, : w - k + 1]
        for i in range(1, k):
            r = torch.maximum(r, x[:, :, :, i : w - k + 1 + i])
        out = r[:, :, : h - k + 1]
        for i in range(1, k):
            out = torch.maximum(out, r[:, :, i : h - k + 1 + i])
        return out


def _conv(cin: int, cout: int, k: int, pad: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, padding=pad)


def _relu() -> nn.ReLU:
    # In place is safe: each tapped output is the input of a conv or pool, never rewritten.
    return nn.ReLU(inplace=True)


def _stage(layers: list[tuple[int, nn.Module]]) -> nn.Sequential:
    """A slice of the trunk whose children keep the indices of the original `features` list, so the
    state-dict keys are those of the published weight files (net.sliceK.INDEX.weight)."""
    s = nn.Sequential()
    for index, layer in layers:
        s.add_module(str(index), layer)
    return s


def alex_trunk() -> nn.ModuleList:
    """Shift-tolerant AlexNet: the first conv runs at stride 1 and is followed by blur-pooling, and each
    3x3/2 max-pool becomes a 3x3/1 max-pool followed by blur-pooling. Outputs after relu1..relu5."""
    return nn.ModuleList([
        _stage([(0, _conv(3, 64, 11, 2)), (1, BlurPool(64)), (2, _relu())]),
        _stage([(3, MaxPool1(3)), (4, BlurPool(64)), (5, _conv(64, 192, 5, 2)), (6, _relu())]),
        _stage([(7, MaxPool1(3)), (8, BlurPool(192)), (9, _conv(192, 384, 3, 1)), (10, _relu())]),
        _stage([(11, _conv(384, 256, 3, 1)), (12, _relu())]),
        _stage([(13, _conv(256, 256, 3, 1)), (14, _relu())]),
    ])


def vgg_trunk() -> nn.ModuleList:
    """Shift-tolerant VGG-16 (configuration D): each 2x2/2 max-pool becomes a 2x2/1 max-pool followed by
    blur-pooling. Outputs after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    plan = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    stages, index, cin = [], 0, 3
    for k, widths in enumerate(plan):
        layers: list[tuple[int, nn.Module]] = []
        if k > 0:
            layers += [(index, MaxPool1(2)), (index + 1, BlurPool(cin))]
            index += 2
        for w in widths:
            layers += [(index, _conv(cin, w, 3, 1)), (index + 1, _relu())]
            index, cin = index + 2, w
        stages.append(_stage(layers))
    return nn.ModuleList(stages)


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Trunk(nn.Module):
    def __init__(self, stages: nn.ModuleList):
        super().__init__()
        for k, s in enumerate(stages, 1):
            self.add_module(f"slice{k}", s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in self.children():
            x = s(x)
            feats.append(x)
        return feats


class _Head(nn.Module):
    """The learned per-channel weights of one layer: a 1x1 conv without bias (index 1 as published;
    index 0 was a dropout, which does nothing at evaluation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = _stage([(1, nn.Conv2d(channels, 1, kernel_size=1, bias=False))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise each feature vector to unit length along the channels (LPIPS' eps outside the sqrt)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class STLPIPS(nn.Module):
    """ST-LPIPS distance between image pairs; see the module docstring. Frozen, in eval mode."""

    def __init__(self, net: str = DEFAULT_NET):
        super().__init__()
        if net not in NETS:
            raise PerceptualError(f"unknown ST-LPIPS network {net!r}; choose from {', '.join(NETS)}")
        self.net_name = net
        self.scaling_layer = _Scaling()
        self.net = _Trunk(alex_trunk() if net == "alex" else vgg_trunk())
        widths = (64, 192, 384, 256, 256) if net == "alex" else (64, 128, 256, 512, 512)
        for k, c in enumerate(widths):
            self.add_module(f"lin{k}", _Head(c))
        self.min_size = self._min_size()

    def heads(self) -> list[_Head]:
        return [getattr(self, f"lin{k}") for k in range(5)]

    def _min_size(self) -> int:
        """Smallest square side the trunk accepts (reflect padding needs every blurred map wider than 2)."""
        for side in range(8, 64):
            try:
                with torch.no_grad():
                    self.net(torch.zeros(1, 3, side, side))
                return side
            except RuntimeError:
                continue
        raise AssertionError("no input size up to 64 passes the trunk")

    def check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise PerceptualError(f"ST-LPIPS takes [N,3,H,W] images, got {tuple(x.shape)}")
        if min(x.shape[2], x.shape[3]) < self.min_size:
            raise PerceptualError(f"ST-LPIPS needs images of at least {self.min_size}x{self.min_size} "
                                  f"pixels, got {x.shape[3]}x{x.shape[2]}")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised feature maps of images [N,3,H,W] in [-1, 1]."""
        self.check(x)
        return [_unit(f) for f in self.net(self.scaling_layer(x))]

    def compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Distances [N] between two images' features (from `features`)."""
        total = fx[0].new_zeros(fx[0].shape[0])
        for a, b, head in zip(fx, fy, self.heads(), strict=True):
            total = total + head((a - b) ** 2).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances [N] between images x and y, both [N,3,H,W] in [-1, 1]. Differentiable in x and y,
        so it can serve as a training loss."""
        if x.shape != y.shape:
            raise PerceptualError(f"ST-LPIPS compares batches of one shape, got {tuple(x.shape)} and "
                                  f"{tuple(y.shape)}")
        # Two trunk passes rather than one over both: half the peak memory on large frames.
        return self.compare(self.features(x), self.features(y))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def vgg_weights_path() -> Path | None:
    """The VGG weight file of an installed stlpips-pytorch wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec("stlpips_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*VGG_IN_WHEEL)
        if path.is_file():
            return path
    return None


def read_state(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a weight file: safetensors, or a PyTorch .pth read with weights_only=True (tensors and
    plain containers only, never arbitrary objects). Size bounded before reading; hash checked if given."""
    path = Path(path)
    if not path.is_file():
        raise PerceptualError(f"{path}: ST-LPIPS weight file not found")
    size = path.stat().st_size
    if size > _MAX_WEIGHTS_BYTES:
        raise PerceptualError(f"{path}: {size} bytes is too large for an ST-LPIPS weight file")
    if sha256 is not None and _sha256(path) != sha256:
        raise PerceptualError(f"{path}: SHA-256 mismatch, the ST-LPIPS weights are damaged; reinstall infotok")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of an untrusted file is one user-facing error
        raise PerceptualError(f"{path}: not a readable weight file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise PerceptualError(f"{path}: not a flat mapping of names to tensors")
    return state


def load_state_strict(model: STLPIPS, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load every tensor, with no missing, unexpected or misshapen key, and check the fixed buffers
    (input scaling and blur filters) hold the values this module defines."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PerceptualError(f"{source}: not {model.net_name} ST-LPIPS weights (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise PerceptualError(f"{source}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
        if (k.endswith(".filt") or k.startswith("scaling_layer.")) and not torch.allclose(state[k].float(), v):
            raise PerceptualError(f"{source}: {k} differs from the filter this network is defined with")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def load_stlpips(net: str = DEFAULT_NET, device: str | torch.device = "cpu", path: str | Path | None = None
                 ) -> STLPIPS:
    """The ST-LPIPS network with its published weights, frozen, in eval mode, on `device`. `path`
    overrides where the weights are read from (the shipped AlexNet file's hash is checked only when it
    is the one read)."""
    model = STLPIPS(net)
    if path is None:
        if net == "alex":
            path, sha = ALEX_WEIGHTS, ALEX_SHA256
        else:
            found = vgg_weights_path()
            if found is None:
                raise PerceptualError("ST-LPIPS VGG weights not found: they are not shipped; install them with "
                                      "`pip install --no-deps stlpips-pytorch` (AlexNet is built in)")
            path, sha = found, None
    else:
        sha = None
    load_state_strict(model, read_state(path, sha), path)
    model.requires_grad_(False)
    return model.eval().to(device)


def to_input(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames [T,H,W,3] -> float32 [T,3,H,W] in [-1, 1], as LPIPS expects."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _steps(shape: tuple[int, ...], chunk_pixels: int) -> int:
    return max(1, chunk_pixels // (shape[1] * shape[2]))


def _check_videos(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise PerceptualError(f"ST-LPIPS compares two [T,H,W,3] videos, got {a.shape} and {b.shape}")


@torch.no_grad()
def frames_distance(model: STLPIPS, a: np.ndarray, b: np.ndarray, chunk_pixels: int = CHUNK_PIXELS
                    ) -> np.ndarray:
    """Per-frame ST-LPIPS of two uint8 videos [T,H,W,3], in chunks of at most `chunk_pixels` pixels
    (at least one frame) so memory stays bounded on long, large videos."""
    _check_videos(a, b)
    device = next(model.parameters()).device
    step = _steps(a.shape, chunk_pixels)
    out = [model(to_input(a[i : i + step], device), to_input(b[i : i + step], device)).double().cpu()
           for i in range(0, a.shape[0], step)]
    return torch.cat(out).numpy() if out else np.zeros(0)


class ReferenceScorer:
    """Per-frame ST-LPIPS of several reconstructions of one reference video (every method and rate of
    an evaluation), keeping the reference's features between calls while they fit in `cache_bytes`:
    the reference then passes through the trunk once instead of once per reconstruction (half the
    work). Past the budget, features are computed each time. Scores equal `frames_distance`'s."""

    def __init__(self, model: STLPIPS, cache_bytes: int = CACHE_BYTES, chunk_pixels: int = CHUNK_PIXELS):
        self.model, self.cache_bytes, self.chunk_pixels = model, cache_bytes, chunk_pixels
        self.device = next(model.parameters()).device
        self._cache: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._used = 0

    @torch.no_grad()
    def score(self, start: int, ref: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Distances of frames start.. of the reference (`ref`, uint8 [T,H,W,3]) to `dec`."""
        _check_videos(ref, dec)
        step = _steps(ref.shape, self.chunk_pixels)
        out = []
        for i in range(0, ref.shape[0], step):
            key = (start + i, min(step, ref.shape[0] - i))
            fr = self._cache.get(key)
            if fr is None:
                fr = self.model.features(to_input(ref[i : i + step], self.device))
                size = sum(f.numel() * f.element_size() for f in fr)
                if self._used + size <= self.cache_bytes:
                    self._cache[key] = fr
                    self._used += size
            fd = self.model.features(to_input(dec[i : i + step], self.device))
            out.append(self.model.compare(fr, fd).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)
