"""Generation right on CUDA by construction, proven on the CPU: CPU generators for the initial noise on every sampling
path, the device and dtype recorded per folder, routed generation in the config's dtype, latency timed on the run's
device, and `generate` / `attack` / `evaluate` shared across processes (two forked gloo ranks) equal to one process."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import inline_prompts
from prunefit.errors import OutputError
from prunefit.generation.sample import generate_run, read_manifest

SAMPLER = SamplerConfig(steps=2, batch_size=2)


class _PipelineSpy:
    """Stands in for ``StableDiffusionPipeline.__call__``: records the generators, returns blank images."""

    def __init__(self):
        self.generators: list[torch.Generator] = []

    def __call__(self, pipe, prompt=None, prompt_embeds=None, generator=None, **kwargs):
        self.generators += list(generator)
        n = len(prompt) if prompt is not None else prompt_embeds.shape[0]
        return SimpleNamespace(images=[Image.new("RGB", (8, 8)) for _ in range(n)])


def test_every_sampling_path_hands_the_pipeline_cpu_generators(tiny, tmp_path, monkeypatch):
    """A run on another device (``meta`` here, ``cuda:N`` for users) still draws its noise from CPU generators:
    the generate path, the attack's text images (pre / adv / ref) and its soft-prompt images."""
    import diffusers

    from prunefit.attacks.base import AttackPrompt
    from prunefit.recipes.attack import AttackRun, sample_soft

    spy = _PipelineSpy()
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", lambda pipe, **kw: spy(pipe, **kw))
    generate_run(tiny, inline_prompts(["a", "b", "c"]), SAMPLER, 0, tmp_path / "gen", device="meta")
    assert len(spy.generators) == 3
    cfg = SimpleNamespace(device="meta", sampler=SAMPLER)
    run = AttackRun.__new__(AttackRun)
    run.cfg, run.sampler, run.target = cfg, SAMPLER, tiny
    prompts = [AttackPrompt("p0", "a skull", 5), AttackPrompt("p1", "a circle", 6)]
    run._text_images(tiny, prompts, [p.prompt for p in prompts])
    sample_soft(tiny, [p.prompt for p in prompts], torch.zeros(2, 0, tiny.text_encoder.config.hidden_size), SAMPLER,
                [5, 6])
    assert len(spy.generators) == 7
    assert {g.device.type for g in spy.generators} == {"cpu"}
    assert [g.initial_seed() for g in spy.generators[3:]] == [5, 6, 5, 6]


def test_text_and_soft_prompt_paths_draw_the_same_image(tiny):
    """Equal embeddings (an empty soft prefix) at one seed: the text path and the soft-prompt path start from the same
    noise, so UnlearnDiffAtk's pre/post comparison is not biased by the path."""
    from prunefit.generation.sample import sample_images
    from prunefit.recipes.attack import sample_soft

    prompts = ["a large red skull", "a small blue circle"]
    text = sample_images(tiny, inline_prompts(prompts), SAMPLER, [11, 12])
    soft = sample_soft(tiny, prompts, torch.zeros(2, 0, tiny.text_encoder.config.hidden_size), SAMPLER, [11, 12])
    for a, b in zip(text, soft):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------- device and dtype of a folder

def _rewrite_settings(folder, **changes):
    path = folder / "manifest.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        for k, v in changes.items():
            if v is None:
                r["settings"].pop(k, None)
            else:
                r["settings"][k] = v
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_manifest_records_device_type_and_dtype(tiny, tmp_path):
    res = generate_run(tiny, inline_prompts(["a"]), SAMPLER, 0, tmp_path, device="cpu")
    settings = read_manifest(res.manifest)["00000"]["settings"]
    assert settings["device"] == "cpu" and settings["dtype"] == "float32" and settings["steps"] == 2


def test_a_folder_from_before_the_device_was_recorded_resumes_as_cpu(tiny, tmp_path):
    generate_run(tiny, inline_prompts(["a"]), SAMPLER, 0, tmp_path)
    _rewrite_settings(tmp_path, device=None, dtype=None)  # an old manifest row
    res = generate_run(tiny, inline_prompts(["a", "b"]), SAMPLER, 0, tmp_path)
    assert (res.generated, res.skipped) == (1, 1)


@pytest.mark.parametrize("changes,said", [
    ({"device": "cuda"}, "made on cuda (float32); this run is on cpu (float32)"),
    ({"dtype": "float16"}, "made on cpu (float16); this run is on cpu (float32)")])
def test_adding_images_made_on_another_device_or_dtype_is_refused(tiny, tmp_path, changes, said):
    generate_run(tiny, inline_prompts(["a"]), SAMPLER, 0, tmp_path)
    _rewrite_settings(tmp_path, **changes)
    before = (tmp_path / "manifest.jsonl").read_bytes()
    new_only = inline_prompts(["a", "b"])[1:]  # no id in common: only the folder-level check can see the mix
    with pytest.raises(OutputError, match="use a new output_dir") as err:
        generate_run(tiny, new_only, SAMPLER, 0, tmp_path)
    assert said in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "manifest.jsonl").read_bytes() == before and not (tmp_path / "images" / "00001.png").exists()


# ---------------------------------------------------------------- routed dtype, latency device

def test_load_routing_loads_the_base_in_the_given_dtype(tmp_path, monkeypatch):
    from prunefit.pruning import routing as route

    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "router.json").write_text(json.dumps({"source_model": "tiny"}))
    seen = {}

    def spy(spec, dtype="float32", device="cpu"):
        seen.update(spec=spec, dtype=dtype, device=device)
        raise KeyboardInterrupt  # stop before the router

    monkeypatch.setattr(route, "load_components", spy)
    with pytest.raises(KeyboardInterrupt):
        route.load_routing(tmp_path, "cpu", "bfloat16")
    assert seen == {"spec": "tiny", "dtype": "bfloat16", "device": "cpu"}


def test_routed_generation_loads_every_expert_in_the_config_dtype(tmp_path, monkeypatch):
    import prunefit.pruning.expert as expert_mod
    from prunefit.config.schema import GenerateConfig
    from prunefit.generation import routed
    from prunefit.generation.sample import GenerationResult
    from prunefit.pruning import routing as route
    from prunefit.recipes import generate

    unet = SimpleNamespace(config={"x": 1}, dtype=torch.bfloat16)
    comps = SimpleNamespace(unet=unet, source="tiny", with_unet=lambda u, source: SimpleNamespace(unet=u))
    calls: dict = {"experts": []}

    def load_routing(prune_dir, device, dtype="float32"):
        calls["routing"] = dtype
        return comps, None, None, {}

    def load_expert(path, base, dtype=torch.float32):
        calls["experts"].append(dtype)
        return torch.nn.Linear(1, 1), None

    monkeypatch.setattr(route, "load_routing", load_routing)
    monkeypatch.setattr(route, "assign", lambda router, encoder, records: [0, 1])
    monkeypatch.setattr(expert_mod, "load_expert", load_expert)
    monkeypatch.setattr(routed, "generate_run", lambda *a, **k: GenerationResult(tmp_path, 1, 0, tmp_path, None))
    cfg = GenerateConfig(model="tiny", experts=str(tmp_path), prompts=["a", "b"], dtype="bfloat16", device="cpu",
                         output_dir=str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    generate._generate_routed(cfg, inline_prompts(["a", "b"]), tmp_path / "out")
    assert calls == {"routing": "bfloat16", "experts": [torch.bfloat16, torch.bfloat16]}


def test_latency_is_measured_on_the_runs_device(tmp_path, monkeypatch):
    from prunefit.evaluation import cost
    from prunefit.evaluation.configs import CostConfig
    from prunefit.evaluation.context import EvalContext
    from prunefit.evaluation.metrics import latency_metric

    seen = []

    def spy(unet, latent, text_length, batch, runs, warmup):
        seen.append(next(unet.parameters()).device.type)
        return {"median_s": 0.001}

    monkeypatch.setattr(cost, "measure_latency", spy)
    ctx = EvalContext(tmp_path, [{"id": "0", "prompt": "a", "model": "tiny"}], device="meta")
    res = latency_metric(ctx, CostConfig(batch_sizes=[1], runs=1, warmup=0))
    assert seen == ["meta"] and res.protocol["device"] == "meta" and res.protocol["dtype"] == "float32"


# ---------------------------------------------------------------- several processes

def _forked_ranks(port: int, *args: str, world: int = 2) -> list[str]:
    """``prunefit <args>`` as ``world`` forked ranks with torchrun's environment (gloo on the CPU); their outputs."""
    import prunefit.recipes.attack  # noqa: F401  (imported once here, inherited by the children)
    import prunefit.recipes.evaluate  # noqa: F401
    import prunefit.recipes.generate  # noqa: F401

    outs, pids = [tempfile.TemporaryFile("w+") for _ in range(world)], []
    sys.stdout.flush(), sys.stderr.flush()
    for rank in range(world):
        pid = os.fork()
        if pid == 0:
            _rank_child(rank, world, port, outs[rank], list(args))
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    texts = [f.seek(0) or f.read() for f in outs]
    assert codes == [0] * world, "\n".join(t[-2000:] for t in texts)
    return texts


def _rank_child(rank: int, world: int, port: int, out, args: list[str]) -> None:
    code = 1
    try:
        from accelerate.state import AcceleratorState, GradientState

        from prunefit.cli import main

        AcceleratorState._reset_state(reset_partial_state=True)  # the parent's single-process state is not ours
        GradientState._reset_state()
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                           "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                           "OMP_NUM_THREADS": "1"})
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = os.fdopen(1, "w", buffering=1)
        torch.set_num_threads(1)  # one thread never enters an OpenMP region (not fork-safe)
        code = main(args)
    except BaseException:  # noqa: BLE001  (the child must never return into pytest)
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def _folder(run):
    return {p.name: p.read_bytes() for p in sorted((run / "images").iterdir())}


GEN = ["generate", "model=toyworld", "sampler.steps=2", "sampler.batch_size=1", "device=cpu"]
PROMPTS = ["a red skull", "a blue circle", "a green square", "a small skull", "a big circle"]


def _prompts(n):
    return "prompts=" + json.dumps(PROMPTS[:n])


def test_two_process_generate_equals_one_process_and_resumes_with_any_count(tmp_path):
    from prunefit.cli import main

    two, one = tmp_path / "two", tmp_path / "one"
    _forked_ranks(29571, *GEN, _prompts(3), f"output_dir={two}")
    assert main([*GEN, _prompts(3), f"output_dir={one}"]) == 0
    assert _folder(two) == _folder(one) and len(_folder(one)) == 3  # byte-identical PNGs
    assert (two / "manifest.jsonl").read_bytes() == (one / "manifest.jsonl").read_bytes()
    assert (two / "grid.png").read_bytes() == (one / "grid.png").read_bytes()
    assert not list(two.glob("manifest.rank-*")) and (two / "resolved_config.yaml").is_file()
    # resumed by one process with more prompts: the merged manifest is the source of truth
    assert main([*GEN, _prompts(5), f"output_dir={two}"]) == 0
    assert main([*GEN, _prompts(5), f"output_dir={one}"]) == 0
    assert _folder(two) == _folder(one) and len(_folder(one)) == 5
    assert (two / "manifest.jsonl").read_bytes() == (one / "manifest.jsonl").read_bytes()


def test_parts_of_a_killed_multi_process_run_are_merged_on_resume(tiny, tmp_path):
    """Rank 1 finished an image and its part row, then the launch died before the merge: a one-process resume keeps
    that image (nothing is remade) and the manifest holds every id once, in prompt order."""
    generate_run(tiny, inline_prompts(["a", "b", "c"]), SAMPLER, 0, tmp_path)
    rows = (tmp_path / "manifest.jsonl").read_text().splitlines()
    (tmp_path / "manifest.jsonl").write_text(rows[0] + "\n")
    (tmp_path / "manifest.rank-1.jsonl").write_text(rows[1] + "\n" + '{"id": "000')  # a torn tail
    before = (tmp_path / "images" / "00001.png").stat().st_mtime_ns
    res = generate_run(tiny, inline_prompts(["a", "b", "c"]), SAMPLER, 0, tmp_path)
    assert (res.generated, res.skipped) == (1, 2)
    assert (tmp_path / "images" / "00001.png").stat().st_mtime_ns == before
    assert list(read_manifest(res.manifest)) == ["00000", "00001", "00002"]
    assert not list(tmp_path.glob("manifest.rank-*"))


def test_strided_share_and_gather_restore_the_order():
    from prunefit.generation.ranks import Ranks

    items = list(range(7))
    shares = [Ranks(r, 3).share(items) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    out: list = [None] * 7
    for r, part in enumerate(shares):
        out[r::3] = part
    assert out == items


ATTACK = ["attack", "model=toyworld", "attack=none", "concept=Vincent Stripes", "n_prompts=3", "attack_all=true",
          "sampler.steps=2", "sampler.batch_size=1", "chunk_size=1", "device=cpu"]


def test_two_process_attack_and_evaluate_equal_one_process(tmp_path):
    from prunefit.cli import main

    two, one = tmp_path / "two", tmp_path / "one"
    _forked_ranks(29575, *ATTACK, f"output_dir={two}")
    assert main([*ATTACK, f"output_dir={one}"]) == 0
    assert _folder(two) == _folder(one)
    for name in ("pre.jsonl", "attack.jsonl"):
        assert (two / name).read_text() == (one / name).read_text()
    assert read_manifest(two / "manifest.jsonl") == read_manifest(one / "manifest.jsonl")
    docs = [json.loads((r / "results.json").read_text()) for r in (two, one)]
    assert docs[0]["metrics"]["attack"]["values"] == docs[1]["metrics"]["attack"]["values"]
    assert not list(two.glob("*.rank-*"))

    gen2, gen1 = tmp_path / "gen2", tmp_path / "gen1"
    for run in (gen2, gen1):
        assert main([*GEN, _prompts(3), f"output_dir={run}"]) == 0
    outs = _forked_ranks(29579, "evaluate", str(gen2), "--metrics", "toyworld", "device=cpu")
    assert main(["evaluate", str(gen1), "--metrics", "toyworld", "device=cpu"]) == 0
    a, b = (json.loads((r / "results.json").read_text())["metrics"]["toyworld"]["values"] for r in (gen2, gen1))
    assert a == b and all("toyworld:" in o for o in outs)  # rank 1 reports rank 0's document


def test_erase_writes_its_files_from_rank_0_only(tmp_path, monkeypatch):
    """Every rank of a launch computes the same edit; a rank other than 0 writes nothing into the shared folder."""
    from prunefit.config.load import load_config
    from prunefit.recipes import erase
    from prunefit.removal.config import EraseConfig

    monkeypatch.setattr(erase, "current_ranks", lambda device="cpu": SimpleNamespace(main=False, barrier=lambda: None),
                        raising=False)
    out = tmp_path / "out"
    cfg = load_config(EraseConfig, [], ["model=tiny", f"output_dir={out}", "removal.method=uce",
                                        "removal.concepts=[Claude Dots]"])
    res = erase.main(cfg)
    assert res.model_path == out / "pipeline" and res.info["method"] == "uce"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
