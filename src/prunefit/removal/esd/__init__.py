"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023; github.com/rohitgandikota/erasing).

ESD-x trains the cross-attention ('xattn', for artist styles), ESD-u everything but cross-attention
('noxattn', for nudity). Target: eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, "")) from a frozen reference
(a frozen copy of the edited model, as ESD, or the unpruned teacher, as the bilevel code). x_t comes from
k DDIM steps of the edited model itself (as ESD), or from real concept images noised at a random t (the
official bilevel code's variant). Defaults: AdamW, lr 1e-5, 1,000 iterations, eta 1 (paper §C.1.3).
"""

from prunefit.removal.entry import MethodEntry
from prunefit.removal.esd.method import ESDConfig, build_phase  # noqa: F401

ENTRY = MethodEntry("esd", "train", ESDConfig, "negative-guidance fine-tuning (ESD-x / ESD-u)",
                    "Gandikota et al. 2023, github.com/rohitgandikota/erasing", build_phase=build_phase,
                    check=ESDConfig.check_retain)
