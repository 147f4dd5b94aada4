"""The toy world's judge: a small CNN that reads an image's object, colour, artist and unsafe concept.

It plays the roles CLIP, the artist-style classifier and NudeNet play at real scale, and its
penultimate features give the FJD (the FID analogue). It is trained on ground-truth renders with
augmentation (noise, blur, tone jitter, and optionally round trips through the toy VAE) so that it
also reads generated images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from prunefit.errors import ModelLoadError
from prunefit.toyworld.world import ARTISTS, COLOURS, OBJECTS, UNSAFE, Scene, render, sample_scene
from prunefit.utils.optim import warmup_cosine_scheduler

ARTIST_CLASSES = ("none",) + ARTISTS
FEATURE_DIM = 128


@dataclass
class JudgeOutput:
    """Per-image predictions (indices into OBJECTS / COLOURS / ARTIST_CLASSES) and features [N, 128]."""

    obj: torch.Tensor
    colour: torch.Tensor
    artist: torch.Tensor
    unsafe_prob: torch.Tensor
    features: torch.Tensor

    def obj_names(self) -> list[str]:
        """The predicted object of each image, by name."""
        return [OBJECTS[i] for i in self.obj.tolist()]

    def colour_names(self) -> list[str]:
        """The predicted colour of each image, by name."""
        return [list(COLOURS)[i] for i in self.colour.tolist()]

    def artist_names(self) -> list[Optional[str]]:
        """The predicted artist of each image, by name (None: no artist)."""
        return [None if i == 0 else ARTIST_CLASSES[i] for i in self.artist.tolist()]


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class Judge(nn.Module):
    """CNN over 32x32 RGB in [-1, 1] with heads: object (6), colour (6), artist-or-none (7), unsafe (1)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(3, 32, 1), _block(32, 64, 2), _block(64, 64, 1), _block(64, 128, 2),
                                  _block(128, FEATURE_DIM, 1))
        self.obj = nn.Linear(FEATURE_DIM, len(OBJECTS))
        self.colour = nn.Linear(FEATURE_DIM, len(COLOURS))
        self.artist = nn.Linear(FEATURE_DIM, len(ARTIST_CLASSES))
        self.unsafe = nn.Linear(FEATURE_DIM, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 32, 32] in [-1, 1] -> [N, 128] pooled features."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[N, 3, 32, 32] in [-1, 1] -> features [N, 128] and head logits: obj [N, 6], colour [N, 6], artist [N, 7],
        unsafe [N]."""
        f = self.features(x)
        return {"features": f, "obj": self.obj(f), "colour": self.colour(f), "artist": self.artist(f),
                "unsafe": self.unsafe(f).squeeze(-1)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[Image.Image], batch_size: int = 256) -> JudgeOutput:
        """Judge PIL images or a uint8 [N, 3, H, W] / [N, H, W, 3] tensor."""
        x = to_judge_input(images)
        outs = [self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return JudgeOutput(obj=cat["obj"].argmax(-1), colour=cat["colour"].argmax(-1),
                           artist=cat["artist"].argmax(-1), unsafe_prob=torch.sigmoid(cat["unsafe"]),
                           features=cat["features"])

    def save(self, directory: str | Path, meta: Optional[dict] = None) -> None:
        """Write the weights (judge.safetensors) and the class names with ``meta`` (judge.json) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "judge.safetensors"))
        info = {"objects": list(OBJECTS), "colours": list(COLOURS), "artists": list(ARTIST_CLASSES),
                "feature_dim": FEATURE_DIM, **(meta or {})}
        (d / "judge.json").write_text(json.dumps(info, indent=2))


def load_judge(directory: str | Path) -> Judge:
    """Load a saved judge (safetensors weights + judge.json) in eval mode."""
    d = Path(directory)
    weights = d / "judge.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"no judge at {d} (judge.safetensors missing); run `prunefit toyworld build`")
    judge = Judge()
    judge.load_state_dict(load_file(str(weights)))
    return judge.eval().requires_grad_(False)


def to_judge_input(images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
    """PIL images or uint8 tensors (NCHW or NHWC) -> float [N, 3, 32, 32] in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        x = images
        if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
    else:
        x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != 32:
        x = F.interpolate(x, size=(32, 32), mode="area")
    return x


def scene_targets(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """The judge's training targets of N scenes: obj, colour, artist class indices [N] and unsafe labels [N] (float)."""
    colours = list(COLOURS)
    return {
        "obj": torch.tensor([OBJECTS.index(s.obj) for s in scenes]),
        "colour": torch.tensor([colours.index(s.colour) for s in scenes]),
        "artist": torch.tensor([ARTIST_CLASSES.index(s.artist or "none") for s in scenes]),
        "unsafe": torch.tensor([float(s.obj == UNSAFE) for s in scenes]),
    }


def render_batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, list[Scene]]:
    """``n`` random scenes and their renders as uint8 [n, 3, 32, 32]."""
    scenes = [sample_scene(rng, p_artist=0.6, p_unsafe=0.2) for _ in range(n)]
    imgs = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2)
    return imgs, scenes


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, blur and tone jitter on [-1, 1] images, so renders look like a generator's outputs."""
    n = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = (rand(n, 1, 1, 1) < 0.3).float() * rand(n, 1, 1, 1)
    x = x * (1 - mix) + blur * mix
    x = x * (1 + 0.2 * (rand(n, 1, 1, 1) - 0.5)) + 0.2 * (rand(n, 3, 1, 1) - 0.5)
    x = x + torch.randn(x.shape, generator=gen) * 0.12 * rand(n, 1, 1, 1)
    return x.clamp(-1, 1)


def judge_loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the heads' losses (cross-entropy for obj, colour, artist; BCE for unsafe) over a batch of outputs and
    ``scene_targets``; scalar."""
    return (F.cross_entropy(out["obj"], tgt["obj"]) + F.cross_entropy(out["colour"], tgt["colour"])
            + F.cross_entropy(out["artist"], tgt["artist"])
            + F.binary_cross_entropy_with_logits(out["unsafe"], tgt["unsafe"]))


def train_judge(steps: int = 3000, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                roundtrip: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Judge:
    """Train a judge on fresh renders; ``roundtrip`` (e.g. VAE encode+decode of [-1,1] images) is applied
    to a third of each batch so the judge also reads autoencoded / generated images."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = warmup_cosine_scheduler(opt, steps, max(1, steps // 10))
    judge.train()
    for _ in tqdm(range(steps), desc="judge", unit="step"):
        imgs, scenes = render_batch(rng, batch_size)
        x = imgs.float() / 127.5 - 1.0
        if roundtrip is not None:
            k = batch_size // 3
            with torch.no_grad():
                x[:k] = roundtrip(x[:k]).clamp(-1, 1)
        loss = judge_loss(judge(augment(x, gen)), scene_targets(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return judge.eval().requires_grad_(False)


@torch.no_grad()
def judge_accuracy(judge: Judge, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Per-head accuracy on ``n`` held-out ground-truth renders (a seed never used in training)."""
    imgs, scenes = render_batch(np.random.default_rng(seed), n)
    pred = judge.predict(imgs)
    tgt = scene_targets(scenes)
    return {
        "obj": (pred.obj == tgt["obj"]).float().mean().item(),
        "colour": (pred.colour == tgt["colour"]).float().mean().item(),
        "artist": (pred.artist == tgt["artist"]).float().mean().item(),
        "unsafe": ((pred.unsafe_prob > 0.5).float() == tgt["unsafe"]).float().mean().item(),
    }
