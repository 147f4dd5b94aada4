"""A stand-in for CUDA's device checks on a CPU-only machine: ``StrictDevice`` + tensors on the ``meta`` device.

An op that mixes a CPU tensor (other than a 0-dim scalar) with a meta tensor raises "Tensor on device cpu is not on
the expected device meta!", as it would with CUDA. Two CUDA errors meta does not give are added by the mode:

- a random draw whose generator sits on another device type than the tensor it makes (``torch.rand(shape,
  generator=cpu_generator, device="cuda")``) raises, as CUDA does; meta silently accepts it;
- value reads of meta tensors (``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()``, ``.cpu()``,
  ``torch.bincount``) give placeholders (zeros) instead of failing, so code that logs, branches or moves results
  to the host still runs to its end on meta. Values are meaningless there: tests assert devices, not numbers.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_READS = {torch.Tensor.item: 0, torch.Tensor.__float__: 0.0, torch.Tensor.__int__: 0, torch.Tensor.__index__: 0,
          torch.Tensor.__bool__: False}


def _tensors(obj):
    """Every tensor in nested args / kwargs."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _to_target(args, kwargs) -> torch.device | None:
    """The device a ``Tensor.to(...)`` call moves to, if it names one."""
    for a in [*args[1:], kwargs.get("device"), kwargs.get("other")]:
        if isinstance(a, (str, torch.device)):
            return torch.device(a)
        if isinstance(a, torch.Tensor):
            return a.device
    return None


class StrictDevice(TorchFunctionMode):
    """Within the block, random draws check their generator's device type against the tensor they make, and value
    reads of ``device`` (meta) tensors give placeholders. ``draws`` records (op, generator device, target device)."""

    def __init__(self, device: str | torch.device = "meta") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.draws: list[tuple[str, str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if isinstance(gen, torch.Generator):
            self._check_generator(func, gen, args, kwargs)
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.device.type == "meta" == self.device.type:
            if func in _READS:
                return _READS[func]
            if func is torch.Tensor.tolist:
                return torch.zeros(first.shape, dtype=first.dtype).tolist()
            moved = _to_target(args, kwargs) if func is torch.Tensor.to else None
            if func is torch.Tensor.cpu or (moved is not None and moved.type == "cpu"):
                dtype = next((a for a in [*args[1:], kwargs.get("dtype")] if isinstance(a, torch.dtype)), first.dtype)
                return torch.zeros(first.shape, dtype=dtype)
            if func is torch.bincount:
                n = max(int(kwargs.get("minlength", args[2] if len(args) > 2 else 0)), 1)
                return torch.zeros(n, dtype=torch.long, device=first.device)
        return func(*args, **kwargs)

    def _check_generator(self, func, gen: torch.Generator, args, kwargs) -> None:
        """Raise as CUDA does when ``gen`` sits on another device type than the draw's output."""
        target = kwargs.get("device")
        if target is None:
            inputs = list(_tensors(args))
            target = inputs[0].device if inputs else torch.get_default_device()
        target = torch.device(target)
        name = getattr(func, "__name__", str(func))
        self.draws.append((name, gen.device.type, target.type))
        if gen.device.type != target.type:
            raise RuntimeError(f"{name}: Expected a '{target.type}' device type for generator but found "
                               f"'{gen.device.type}'")
