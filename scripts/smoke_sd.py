"""`make smoke-sd`: every prunefit command on full-size random-weight SD pipelines (real shapes, reduced size).

For each pipeline (``prunefit dev skeleton``, built once into runs/skeletons/ and reused) it runs generate with
every scheduler, APTP prune (real gate layout, 4 experts) + route + routed generation, finetune (plain, cached,
gradient checkpointing), erase with all four methods on the dense model and on an expert, bilevel with both
presets, evaluate (fid, clip_score, nudity_asr, macs, latency) and report, each command in its own process at
``--resolution`` px with a handful of steps. It writes a table command x pipeline -> ok / error, wall time and
peak RSS (the child's ``ru_maxrss``) to OUT/smoke.md and OUT/smoke.json; any error fails the run (exit 1).

Reduced size: the commands run on a "view" of each skeleton whose ``unet/config.json`` says ``sample_size =
resolution / 8`` (the weights are symlinks to the skeleton's), so commands that work at the model's native size
(ESD and ConceptPrune rollouts, training data) run at ``--resolution`` too; the weights and every shape except the
spatial size are the published ones. The first generate row runs on the untouched skeleton folder.

Run it under the heavy-jobs lock with one thread:
    flock /tmp/prunefit-heavy.lock env OMP_NUM_THREADS=1 .venv/bin/python scripts/smoke_sd.py --arch sd15 --arch sd21
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEDULERS = ("pndm", "ddim", "ddpm", "euler", "euler_ancestral", "dpm_solver", "lms")
PROMPTS = ["a photo of a cat", "a painting of a house in the style of Claude Monet"]


@dataclass
class Row:
    command: str
    arch: str
    status: str
    seconds: float
    peak_rss_mb: float
    argv: list[str]
    error: str = ""
    weights_gb_written: float = 0.0
    """Weight files this row wrote (deleted after the row, to bound disk use)."""


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def run_child(argv: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``argv`` to completion; (exit code, wall seconds, peak RSS in MB of that child)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def output_dir(argv: list[str]) -> Path | None:
    for i, a in enumerate(argv):
        if a.startswith("output_dir="):
            return Path(a.split("=", 1)[1])
        if a in ("-o", "--output") and i + 1 < len(argv):
            return Path(argv[i + 1])
    return None


def drop_weights(folder: Path | None) -> float:
    """Delete the weight files a row wrote (a full-size pipeline is 4-5 GB; 30 rows would not fit on disk);
    returns the GB deleted. Logs, configs and summaries stay."""
    if folder is None or not folder.is_dir():
        return 0.0
    gone = 0
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink() and f.suffix in WEIGHT_SUFFIXES:
            gone += f.stat().st_size
            f.unlink()
    return gone / 1e9


def prunefit(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunefit", *args]


# ------------------------------------------------------------------------------------------ inputs
def skeleton(arch: str, folder: Path) -> Path:
    path = folder / arch
    if not (path / "model_index.json").is_file():
        code, secs, rss = run_child(prunefit("dev", "skeleton", "--arch", arch, "-o", str(path)),
                                    folder / f"build-{arch}.log")
        if code:
            sys.exit(f"building the {arch} skeleton failed; see {folder / f'build-{arch}.log'}")
        print(f"built {path} in {secs:.0f} s (peak RSS {rss:.0f} MB)", flush=True)
    return path


def reduced_view(skel: Path, view: Path, resolution: int) -> Path:
    """A pipeline folder sharing ``skel``'s files (symlinks) whose UNet config says sample_size = resolution/8."""
    if (view / "model_index.json").is_file():
        return view
    view.mkdir(parents=True, exist_ok=True)
    for sub in sorted(skel.iterdir()):
        if sub.is_dir():
            (view / sub.name).mkdir(parents=True, exist_ok=True)
            for f in sub.iterdir():
                (view / sub.name / f.name).symlink_to(f.resolve())
        else:
            (view / sub.name).symlink_to(sub.resolve())
    cfg_path = view / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["sample_size"] = resolution // 8
    cfg_path.unlink()
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return view


def image_folder(folder: Path, captions: list[str], resolution: int, seed: int) -> Path:
    """An image-caption folder (metadata.jsonl) of smooth random images, one per caption."""
    from PIL import Image

    if (folder / "metadata.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, text in enumerate(captions):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((resolution, resolution), Image.BICUBIC).save(folder / f"{i:04d}.png")
        rows.append(json.dumps({"file_name": f"{i:04d}.png", "text": text}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def clip_vit_l(folder: Path, small: bool = False) -> Path:
    """A random-weight CLIP ViT-L/14 (openai/clip-vit-large-patch14's config) with the real tokenizer; ``small``: a
    2-layer, 64-wide CLIP with the same tokenizer and preprocessing (the same code paths, for CPU rehearsals)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import CLIPConfig, CLIPModel

    from prunefit.models.skeleton import clip_tokenizer, text_encoder_config

    text = {k: v for k, v in text_encoder_config("sd15").items() if k != "projection_dim"}
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
              "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    if small:
        tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
        text.update(tiny)
        vision.update(tiny, patch_size=32)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32 if small else 768))
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    clip_tokenizer().save_pretrained(tmp)
    (tmp / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    tmp.rename(folder)
    return folder


INCEPTION_RANDOM = """
import sys, torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as Net
real = Net.load_state_dict
Net.load_state_dict = lambda self, state, *a, **k: None  # keep the random init instead of the missing real file
torch.manual_seed(0)
orig_load, torch.load = torch.load, lambda *a, **k: {}
net = Net("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
torch.load, Net.load_state_dict = orig_load, real
torch.save(net.state_dict(), sys.argv[1])
"""


def inception_random(path: Path) -> Path | None:
    """torch-fidelity's FID Inception-v3 with random weights (its exact module structure), saved as the weights file
    ``fid.weights`` reads; None when torch-fidelity cannot be imported here (it needs torchvision)."""
    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    proc = subprocess.run([sys.executable, "-c", INCEPTION_RANDOM, str(tmp)], capture_output=True, text=True,
                          env=_env(), check=False)
    if proc.returncode != 0:
        return None
    tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------------ commands
def commands(arch: str, skel: Path, model: Path, out: Path, data: Path, concept: Path, clip: Path, prompts: Path,
             res: int, steps: int, incep: Path | None = None) -> list[tuple[str, list[str]]]:
    """(row name, argv) for every command, in dependency order; an empty argv is a row that cannot run here."""
    m = f"model={model}"
    size = [f"sampler.height={res}", f"sampler.width={res}", f"sampler.steps={steps}"]
    dat = ["data.source=folder", f"data.path={data}", f"data.resolution={res}"]
    train = ["train.max_steps=2", "train.micro_batch_size=1", "train.warmup_steps=0", "train.log_every=1",
             "train.checkpoint_every=100"]
    expert = out / "prune" / "experts" / "expert-0"
    cmds = [("generate pndm (skeleton folder)", prunefit("generate", "-p", PROMPTS[0], "-o", str(out / "gen-pndm"),
                                                          f"model={skel}", *size, "sampler.batch_size=2"))]
    cmds += [(f"generate {s}", prunefit("generate", "-p", PROMPTS[0], "-o", str(out / f"gen-{s}"), m, *size,
                                        f"sampler.scheduler={s}")) for s in SCHEDULERS[1:]]
    cmds += [("generate 2 prompts (for eval)", prunefit("generate", "--prompt-file", str(prompts), "-o",
                                                         str(out / "gen-eval"), m, *size, "sampler.batch_size=2")),
             ("prune aptp (4 experts)", prunefit("prune", m, f"output_dir={out / 'prune'}", "num_experts=4",
                                                 "steps=2", "batch_size=2", "hypernet_pretrain_steps=1",
                                                 "lr=3.0",  # 2 steps at the default lr prune nothing (gates start kept)
                                                 "eval_prompts=0", "log_every=1", *dat)),
             ("route", prunefit("route", "--experts", str(out / "prune"), "--prompt-file", str(prompts), "-o",
                                str(out / "routes.jsonl"))),
             ("generate routed (experts)", prunefit("generate", "--experts", str(out / "prune"), "--prompt-file",
                                                    str(prompts), "-o", str(out / "gen-routed"), m, *size)),
             ("finetune", prunefit("finetune", m, f"student={expert}", f"output_dir={out / 'ft'}", *dat, *train)),
             ("cache", prunefit("cache", m, f"output_dir={out / 'cache'}", "samples=2", "batch_size=1", *dat)),
             ("finetune cache_dir", prunefit("finetune", m, f"student={expert}", f"output_dir={out / 'ft-cache'}",
                                             f"cache_dir={out / 'cache'}", *dat, *train)),
             ("finetune gradient_checkpointing", prunefit("finetune", m, f"student={expert}",
                                                          f"output_dir={out / 'ft-gc'}", *dat, *train,
                                                          "train.gradient_checkpointing=true"))]
    erase = {"esd": ["esd.iterations=1", "esd.ddim_steps=3"],
             "uce": ["uce.guides=[person]"],
             "concept_prune": ["concept_prune.steps=3", "concept_prune.union_steps=1", "concept_prune.things=[person]",
                               "concept_prune.base_template=a photo of a {thing}",
                               "concept_prune.target_template=a photo of a {concept} {thing}"],
             "advunlearn": ["advunlearn.iterations=1", "advunlearn.attack_steps=1", "advunlearn.ddim_steps=3",
                            "advunlearn.attack_warmup=0"]}
    for where, student in (("dense", []), ("expert", [f"student={expert}"])):
        cmds += [(f"erase {meth} ({where})", prunefit("erase", "--method", meth, m, *student,
                                                      f"output_dir={out / f'erase-{meth}-{where}'}",
                                                      "removal.concepts=[nudity]", *args))
                 for meth, args in erase.items()]
    bil = ["concepts=[nudity]", f"student={expert}", "upper_every=1", "upper_warmup_steps=0", *dat, *train]
    # official preset: its second AdamW covers every parameter (+6.5 GB at SD size), which with the first one
    # exceeds a 23 GB CPU box; the smoke confines the upper step to cross-attention (same code path)
    cmds += [("bilevel official (upper: xattn)", prunefit("bilevel", m, "preset=official",
                                                          f"output_dir={out / 'bl-official'}",
                                                          f"esd.concept_images={concept}", "upper_train_method=xattn",
                                                          *bil)),
             ("bilevel paper", prunefit("bilevel", m, "preset=paper", f"output_dir={out / 'bl-paper'}",
                                        "esd.ddim_steps=3", *bil))]
    ev = [str(out / "gen-eval"), f"fid.reference_images={data}"]
    cmds += [("evaluate fid (clip features)", prunefit("evaluate", *ev, "-m", "fid", "fid.features=clip",
                                                       f"fid.clip_model={clip}", "-o", str(out / "ev-fid.json"))),
             ("evaluate fid (Inception, torch-fidelity)",
              prunefit("evaluate", *ev, "-m", "fid", "fid.features=inception", f"fid.weights={incep}",
                       "-o", str(out / "ev-fid-inception.json")) if incep else []),
             ("evaluate clip_score (ViT-L)", prunefit("evaluate", *ev, "-m", "clip_score", f"clip_score.model={clip}",
                                                      "-o", str(out / "ev-clip.json"))),
             ("evaluate nudity_asr (NudeNet)", prunefit("evaluate", *ev, "-m", "nudity_asr",
                                                        "-o", str(out / "ev-nudity.json"))),
             ("evaluate macs, latency", prunefit("evaluate", *ev, "-m", "macs,latency", f"cost.resolution={res}",
                                                 "cost.batch_sizes=[1]", "cost.runs=2", "cost.warmup=1",
                                                 "-o", str(out / "ev-cost.json"))),
             ("report", prunefit("report", str(out / "ev-fid.json"), str(out / "ev-clip.json"),
                                 str(out / "ev-nudity.json"), str(out / "ev-cost.json"), "-o", str(out / "report")))]
    return cmds


def memory_commands(model: Path, out: Path, data: Path, res: int) -> list[tuple[str, list[str]]]:
    """Extra rows for the memory table (SD 2.1, ``res`` px, batch 1); the smoke's finetune / finetune gradient
    checkpointing / bilevel paper rows are the fp32 baselines."""
    m = f"model={model}"
    expert = out / "prune" / "experts" / "expert-0"
    common = [m, f"student={expert}", "data.source=folder", f"data.path={data}", f"data.resolution={res}",
              "train.max_steps=2", "train.micro_batch_size=1", "train.warmup_steps=0", "train.log_every=1",
              "train.checkpoint_every=100"]
    bil = [*common, "preset=paper", "concepts=[nudity]", "upper_every=1", "esd.ddim_steps=3"]
    return [("memory: finetune teacher bf16", prunefit("finetune", *common, f"output_dir={out / 'mem-ft-bf16'}",
                                                       "train.teacher_dtype=bfloat16")),
            ("memory: bilevel paper + checkpointing", prunefit("bilevel", *bil, f"output_dir={out / 'mem-bl-gc'}",
                                                               "train.gradient_checkpointing=true")),
            ("memory: bilevel paper + vartheta twin", prunefit("bilevel", *bil, f"output_dir={out / 'mem-bl-twin'}",
                                                               "track_vartheta=true"))]


def student_params(work: Path) -> int:
    from safetensors import safe_open

    path = work / "prune" / "experts" / "expert-0" / "unet.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        return sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())  # noqa: SIM118 (safe_open is not a dict)


def mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable")) / 1024


def inception_probe() -> str:
    """Whether the torchmetrics / torch-fidelity Inception FID path can be imported here ('' = yes)."""
    code = "from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


# ------------------------------------------------------------------------------------------ main
def table(rows: list[Row], archs: list[str]) -> str:
    names = list(dict.fromkeys(r.command for r in rows))
    cell = {(r.command, r.arch): r for r in rows}
    lines = ["| command | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    for n in names:
        cells = []
        for a in archs:
            r = cell.get((n, a))
            cells.append("-" if r is None else f"{r.status} {r.seconds:.0f} s, {r.peak_rss_mb / 1024:.1f} GB")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_arch(arch: str, args, out: Path, shared: dict) -> list[Row]:
    skel = skeleton(arch, args.skeletons)
    work = out / arch
    work.mkdir(parents=True, exist_ok=True)
    model = reduced_view(skel, work / f"model-{args.resolution}px", args.resolution)
    rows = []
    cmds = commands(arch, skel, model, work, shared["data"], shared["concept"], shared["clip"], shared["prompts"],
                    args.resolution, args.steps, shared["inception"])
    if arch == "sd21" and not args.no_memory:
        cmds += memory_commands(model, work, shared["data"], args.resolution)
    for name, argv in cmds:
        if args.only and not any(o in name for o in args.only):
            continue
        if not argv:
            rows.append(Row(name, arch, "not run", 0.0, 0.0, [], f"needs torch-fidelity: {shared['probe']}"))
            print(f"[{arch}] {name}: {rows[-1].error}", flush=True)
            continue
        if "vartheta" in name:  # the twin adds its weights, grads and AdamW states: 16 B per student parameter
            base = next((r.peak_rss_mb for r in rows if r.command == "bilevel paper" and r.status == "ok"), None)
            need = None if base is None else base + 16 * student_params(work) / 2**20
            if need is None or need > 0.95 * mem_available_mb():
                why = ("no measured bilevel paper row to predict from" if need is None else
                       f"predicted peak {need:.0f} MB (bilevel paper + 16 B x student params) > "
                       f"{mem_available_mb():.0f} MB available; not run (no swap: it would be OOM-killed)")
                rows.append(Row(name, arch, "refused", 0.0, 0.0, argv[2:], why))
                print(f"[{arch}] {name}: {rows[-1].error}", flush=True)
                continue
        log = work / ("log-" + "".join(c if c.isalnum() else "_" for c in name) + ".txt")
        code, secs, rss = run_child(argv, log)
        err = "" if code == 0 else (log.read_text().strip().splitlines() or ["?"])[-1][:300]
        rows.append(Row(name, arch, "ok" if code == 0 else "ERROR", secs, rss, argv[2:], err))
        if name.startswith(("finetune", "erase", "bilevel", "memory")):
            rows[-1].weights_gb_written = drop_weights(output_dir(argv))
        print(f"[{arch}] {name}: {rows[-1].status} {secs:.0f} s {rss:.0f} MB {err}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=["sd15", "sd21", "sd21-base"])
    p.add_argument("--skeletons", type=Path, default=ROOT / "runs" / "skeletons")
    p.add_argument("--output", "-o", type=Path, default=ROOT / "runs" / "smoke-sd")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--steps", type=int, default=2, help="denoising steps per generate")
    p.add_argument("--only", action="append", help="run only rows whose name contains this (repeatable)")
    p.add_argument("--no-memory", action="store_true", help="skip the extra SD 2.1 memory rows")
    args = p.parse_args()
    archs = args.arch or ["sd15", "sd21"]
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    captions = ["a photo of a cat", "a red car on a street", "a bowl of fruit", "a dog on the beach"]
    shared = {"data": image_folder(out / "data", captions, args.resolution, 0),
              "concept": image_folder(out / "concept", ["a nude person", "nudity"], args.resolution, 1),
              "clip": clip_vit_l(args.skeletons / "clip-vit-l14-random"),
              "prompts": out / "prompts.txt", "probe": inception_probe()}
    shared["inception"] = None if shared["probe"] else inception_random(args.skeletons / "inception-fid-random.pth")
    shared["prompts"].write_text("\n".join(PROMPTS) + "\n")
    rows = [r for a in archs for r in run_arch(a, args, out, shared)]
    probe = shared["probe"]
    prev = json.loads((out / "smoke.json").read_text()) if (out / "smoke.json").is_file() else []
    keep = [Row(**r) for r in prev if (r["command"], r["arch"]) not in {(x.command, x.arch) for x in rows}]
    (out / "smoke.json").write_text(json.dumps([asdict(r) for r in keep + rows], indent=1))
    every = keep + rows  # the table shows earlier invocations' rows too (e.g. one arch at a time)
    shown = list(dict.fromkeys([r.arch for r in every]))
    md = [f"# smoke-sd: {args.resolution} px, {args.steps} denoising steps, threads 1\n", table(every, shown), "",
          "Inception FID path (torchmetrics / torch-fidelity): " + ("importable" if not probe else f"not run: {probe}")]
    md += [f"\n- {r.arch} {r.command}: {r.error}" for r in every if r.status != "ok"]
    (out / "smoke.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 1 if any(r.status == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
