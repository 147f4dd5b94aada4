"""Device placement, statically: every torch tensor factory and ``torch.Generator`` under src/ names its device.

A factory without ``device=`` makes a CPU tensor; on CUDA it crashes the first op that mixes it with model data
(or, with a CPU generator and a CUDA ``device=``, the draw itself). Each call must pass ``device=`` (not the
literal "cpu"), be a ``*_like`` call, or stand on ``ALLOWED`` below with the reason it is right on any device.
``ALLOWED`` is keyed by (file under src/prunefit, enclosing function, factory), so it survives edits.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "prunefit"
FACTORIES = {"randn", "rand", "randint", "randperm", "zeros", "ones", "empty", "full", "arange", "linspace",
             "logspace", "eye", "tensor", "as_tensor", "Generator"}

CPU_SEED = "CPU on purpose: seeds noise identically across devices; draws name the generator's device, then move"
HOST = "host-side bookkeeping (token ids, labels, counts) that never meets model tensors"
HOST_IDS = "host-side token ids / positions, moved to the text encoder's device where they are used"
MODULE = "module state: moves with the module's .to(device)"
HOST_ARCH = "host-side 0/1 architecture code; CPU indices slice weights on any device (materialize)"
TOY_CPU = "toy-world build / judge: trains and runs on the CPU only (no device argument exists)"

ALLOWED: dict[tuple[str, str, str], str] = {
    ("training/loop.py", "lr_schedule", "zeros"): "a throw-away parameter that lets diffusers build a schedule (the LR "
                                                  "factor is kept, the tensor never meets model data)",
    # generators kept on the CPU so that a seed gives the same numbers on every device
    ("objectives/inputs.py", "sample_generator", "Generator"): CPU_SEED,
    ("pruning/objective.py", "RouterObjective.__call__", "Generator"): CPU_SEED,
    ("attacks/base.py", "attack_generator", "Generator"): CPU_SEED,
    ("removal/concept_prune/method.py", "_activation_norms", "Generator"):
        "CPU on purpose: the sampler's latents are drawn on the generator's device (diffusers), then moved",
    ("generation/seeds.py", "generators", "Generator"): CPU_SEED,
    ("data/loader.py", "Prefetcher._restart", "Generator"): "DataLoader's sampling generator: a CPU one by contract",
    ("models/inputs.py", "unet_inputs", "Generator"): CPU_SEED,
    ("models/inputs.py", "unet_inputs", "randn"): "drawn with the CPU generator above, then moved to ``device``",
    ("pruning/baselines.py", "random_scores", "Generator"): "host-side random baseline scores (CPU seed)",
    ("pruning/baselines.py", "random_scores", "rand"): "host-side random baseline scores (CPU seed)",
    # module state
    ("pruning/router.py", "Router.__init__", "empty"): MODULE,
    ("pruning/router.py", "Router.__init__", "tensor"): MODULE,
    ("pruning/router.py", "Router.__init__", "zeros"): MODULE,
    ("pruning/spec.py", "GateSpec.group_template", "full"): "registered as a Router buffer (moves with it)",
    ("pruning/spec.py", "GateSpec.group_template", "ones"): "registered as a Router buffer (moves with it)",
    ("pruning/spec.py", "GateSpec.ones", "ones"): "all-ones architecture; gating moves gates to each activation",
    # host-side architecture codes, token ids, labels
    ("pruning/baselines.py", "prune_to_target", "ones"): HOST_ARCH,
    ("pruning/expert.py", "build_expert_unet", "tensor"): HOST_ARCH,
    ("experiments/table3/run.py", "Table3.prune_like", "tensor"): HOST_ARCH,
    ("recipes/route.py", "route_file", "tensor"): HOST,
    ("data/cache.py", "LatentCache.samples", "arange"): "indexes the CPU latent cache; the batch moves after",
    ("attacks/soft_prompt.py", "prefix_token_ids", "tensor"): HOST_IDS,
    ("attacks/soft_prompt.py", "valid_token_ids", "tensor"): "host-side vocabulary ids (callers move them)",
    ("attacks/p4d/attack.py", "_layout", "arange"): HOST_IDS,
    ("attacks/p4d/attack.py", "_layout", "tensor"): HOST_IDS,
    ("attacks/ringabell/attack.py", "sequence_states", "full"): HOST_IDS,
    ("attacks/ringabell/attack.py", "_evolve", "randint"): "host-side genetic search (CPU token ids, CPU generator)",
    ("attacks/ringabell/attack.py", "_evolve", "rand"): "host-side genetic search (CPU token ids, CPU generator)",
    ("attacks/ringabell/attack.py", "search", "randint"): "host-side genetic search (CPU token ids, CPU generator)",
    ("attacks/ringabell/attack.py", "allowed_tokens", "tensor"): HOST,
    # the toy world's own builders and judge
    ("recipes/toyworld_build.py", "build_vae", "Generator"): TOY_CPU,
    ("recipes/toyworld_build.py", "train_teacher", "Generator"): TOY_CPU,
    ("recipes/toyworld_build.py", "train_teacher", "randn"): TOY_CPU,
    ("recipes/toyworld_build.py", "train_teacher", "randint"): TOY_CPU,
    ("toyworld/judge.py", "scene_targets", "tensor"): TOY_CPU,
    ("toyworld/judge.py", "augment", "rand"): TOY_CPU,
    ("toyworld/judge.py", "augment", "randn"): TOY_CPU,
    ("toyworld/judge.py", "train_judge", "Generator"): TOY_CPU,
    ("toyworld/metrics.py", "fidelity", "tensor"): TOY_CPU,
}


def _factory(node: ast.Call) -> str | None:
    """``torch.<factory>(...)`` -> factory name, else None."""
    f = node.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "torch":
        return f.attr if f.attr in FACTORIES else None
    return None


def _device_ok(node: ast.Call) -> bool:
    """True where the call passes ``device=`` and it is not the literal "cpu"."""
    for kw in node.keywords:
        if kw.arg == "device":
            return not (isinstance(kw.value, ast.Constant) and kw.value.value == "cpu")
    return False


def factory_calls() -> list[tuple[str, str, str, int]]:
    """Every torch factory call under src/prunefit without a device: (file, enclosing function, factory, line)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()

        def visit(node: ast.AST, scope: list[str]) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                scope = [*scope, node.name]
            if isinstance(node, ast.Call) and (name := _factory(node)) and not _device_ok(node):
                fn = ".".join(scope) or "<module>"
                found.append((rel, fn, name, node.lineno))
            for child in ast.iter_child_nodes(node):
                visit(child, scope)

        visit(ast.parse(path.read_text(), str(path)), [])
    return found


def test_every_factory_names_its_device():
    bad = [f"{f}:{line} {fn}: torch.{name}(...) without device=" for f, fn, name, line in factory_calls()
           if (f, fn, name) not in ALLOWED]
    assert not bad, ("tensor factories without device= (pass the device of the data the tensor meets, or add an "
                     "ALLOWED entry with the reason it is right on CUDA):\n" + "\n".join(bad))


def test_allow_list_has_no_stale_entries():
    hits = {(f, fn, name) for f, fn, name, _ in factory_calls()}
    stale = sorted(set(ALLOWED) - hits)
    assert not stale, f"ALLOWED entries that match no call any more (remove them): {stale}"


def test_checker_flags_a_missing_device():
    tree = ast.parse("import torch\ntorch.eye(3)\ntorch.eye(3, device=x.device)\ntorch.zeros(2, device='cpu')\n"
                     "torch.zeros_like(x)\ntorch.Generator().manual_seed(0)\n")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _factory(n)]
    assert [(_factory(c), _device_ok(c)) for c in calls] == [
        ("eye", False), ("eye", True), ("zeros", False), ("Generator", False)]
