"""UnlearnDiffAtk: To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy to Generate Unsafe
Images (Zhang et al., ECCV 2024; github.com/OPTML-Group/Diffusion-MU-Attack). A white-box prefix of soft tokens that
makes the attacked model denoise the unerased model's image of the prompt."""

from prunefit.attacks.base import AttackEntry
from prunefit.attacks.unlearndiff.attack import UnlearnDiffConfig, run

ENTRY = AttackEntry("unlearndiff", "white-box", UnlearnDiffConfig,
                    "k soft prefix tokens minimizing the attacked model's denoising loss on target images",
                    "Zhang et al. 2024, github.com/OPTML-Group/Diffusion-MU-Attack", run, soft=True)
