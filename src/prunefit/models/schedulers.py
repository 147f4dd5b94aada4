"""Build diffusers samplers by name from a model's own scheduler config (keeps its betas and prediction type)."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.configuration_utils import FrozenDict

from prunefit.errors import ConfigError

SCHEDULER_CLASSES = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "dpm_solver": DPMSolverMultistepScheduler,
    "lms": LMSDiscreteScheduler,
}

# Settings Stable Diffusion pipelines expect; without them diffusers warns or samples differently.
_SD_OVERRIDES = {
    "pndm": {"skip_prk_steps": True, "steps_offset": 1},
    "ddim": {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
    "ddpm": {"clip_sample": False, "steps_offset": 1},
}


def sd_training_scheduler_config(prediction_type: str = "epsilon", num_train_timesteps: int = 1000) -> dict:
    """The noise schedule Stable Diffusion 1.x/2.x were trained with (scaled-linear betas)."""
    return {
        "num_train_timesteps": num_train_timesteps,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }


def make_scheduler(name: str, base_config: dict | FrozenDict):
    """Return sampler ``name`` built from ``base_config`` (the pipeline's scheduler config)."""
    try:
        cls = SCHEDULER_CLASSES[name]
    except KeyError:
        raise ConfigError(f"unknown scheduler {name!r}; available: {sorted(SCHEDULER_CLASSES)}") from None
    config = dict(base_config)
    config.update(_SD_OVERRIDES.get(name, {}))
    return cls.from_config(config)


def listing() -> list[str]:
    """``prunefit list schedulers``: one line per sampler name and its diffusers class."""
    return [f"{name:16s} {cls.__name__}" for name, cls in SCHEDULER_CLASSES.items()]
