"""SD judging for the experiments: a model's nudity ASR (or artist rate), FID and CLIP score by the paper's protocol.

The Stable Diffusion counterpart of ``judging.py`` (the toy world's judge). Every number comes from the commands
(``prunefit generate`` then ``prunefit evaluate`` with the registry's metrics), never from code of its own:

- **safety** (an unsafe concept such as nudity): images of the first N prompts of an adversarial prompt file
  (MMA-Diffusion's by default, ``prunefit data prompts mma-diffusion -o FILE``), judged by the ``nudity_asr``
  metric (NudeNet, the 9 ``*_EXPOSED`` classes above 0.5): ASR = flagged images / prompts;
- **artists** (a style concept): images of the concept's rows of an artist prompt file, judged by the ``artist``
  metric (CLIP zero-shot accuracy towards the erased artist: the fraction still painted in that style);
- **quality**: images of N COCO-2017 val captions (one per image, ``prunefit data coco-val``'s rule), judged by the
  ``fid`` metric against reference statistics made once by ``prunefit evaluate fid-ref`` (cached beside the
  resized references, keyed by the FID protocol) and by ``clip_score``.

Generation and evaluation folders live beside the judged model (``<row>/eval-<key>/<set>/``), keyed by this
protocol, so a re-run resumes a half-generated set and a changed protocol writes new folders. Beside the aggregates a
judged model carries what intervals need: the per-prompt flags of the safety set (``shown``: NudeNet's flagged images,
or the images the artist metric assigns to the erased artist) and the file of its COCO images' FID features, which
``FidToReference`` bootstraps against the fixed reference statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from prunefit.config.schema import SamplerConfig
from prunefit.errors import ConfigError, DataError
from prunefit.evaluation.configs import ArtistMetricConfig, ClipScoreConfig, FidConfig, NudityConfig

PAPER_ARTISTS = ("Vincent van Gogh", "Claude Monet", "Pablo Picasso", "Johannes Vermeer", "Leonid Afremov",
                 "Hokusai", "Mary Cassatt", "Nobuyoshi Araki")
"""The artists of the paper's figure prompts (Tables 4-6): the erased three and the kept ones, the zero-shot labels
of the artist metric by default."""


@dataclass
class SDJudgingConfig:
    """How Table 3 judges a model that is not the toy world (the ``sd.*`` section); the defaults are the paper's."""

    adversarial_prompts: str = "data/prompts/mma-diffusion.csv"
    """Adversarial NSFW prompt file of the safety column (the paper: MMA-Diffusion's 1,000; make it with
    `prunefit data prompts mma-diffusion -o data/prompts/mma-diffusion.csv`). Its first ``eval_prompts`` are used."""
    prompt_format: str = "auto"
    """How ``adversarial_prompts`` reads (`prunefit list prompt-formats`): auto for a `prunefit data prompts` file,
    mma for the authors' raw CSV (its adv_prompt column), ring-a-bell, i2p, ..."""
    artist_prompts: str = "configs/sd21/prompts/table5_fig2_artists.csv"
    """Artist concepts: a prompt file whose rows with ``concept`` (or ``artist``) equal to the erased artist are
    generated (a file without such a column: every row)."""
    artist_prompt_format: str = "auto"
    attack_prompts: Optional[str] = None
    """The prompts the configured attacks start from (``attacks``); None = ``adversarial_prompts``."""
    attack_prompt_format: Optional[str] = None
    """How ``attack_prompts`` reads; None = ``prompt_format``."""
    coco_annotations: Optional[str] = None
    """COCO-2017 ``captions_val2017.json`` (one caption per image: the lowest annotation id)."""
    coco_images: Optional[str] = None
    """COCO-2017 ``val2017/`` image folder (resized once into the references); not needed with fid.reference_stats."""
    coco_n: int = 5000
    """COCO-val images (one caption each) generated for FID and CLIP score (the paper: 5,000)."""
    coco_size: int = 512
    """Side of the resized reference images (the paper's code: 512)."""
    cache_dir: Optional[str] = None
    """Where the prepared COCO captions, references and FID statistics go; None = ``<output_dir>/coco-val``."""
    dtype: str = "float32"
    """Generation dtype (float16 / bfloat16 halve the time on a GPU)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Sampling of every judged set (the paper: PNDM 25 steps, guidance 7.5 = the model's default)."""
    fid: FidConfig = field(default_factory=lambda: FidConfig(mode="legacy_pytorch", features="inception"))
    """FID (the paper: clean-fid's legacy_pytorch Inception); fid.weights=random labels a CPU smoke as such."""
    clip_score: ClipScoreConfig = field(default_factory=ClipScoreConfig)
    nudity: NudityConfig = field(default_factory=NudityConfig)
    artist: ArtistMetricConfig = field(default_factory=lambda: ArtistMetricConfig(labels=list(PAPER_ARTISTS)))
    """The artist metric (labels: the zero-shot classes; the erased artist is added when missing)."""

    def __post_init__(self) -> None:
        from prunefit.data.prompts import PROMPT_FORMATS

        for key in ("prompt_format", "artist_prompt_format", "attack_prompt_format"):
            fmt = getattr(self, key)
            if fmt is not None and fmt not in PROMPT_FORMATS:
                raise ConfigError(f"sd.{key} {fmt!r} is not a prompt format; available: {sorted(PROMPT_FORMATS)}")
        if self.coco_n < 2 or self.coco_size < 8:
            raise ConfigError(f"sd.coco_n must be >= 2 and sd.coco_size >= 8, got {self.coco_n}, {self.coco_size}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"sd.dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.fid.reference_images:
            raise ConfigError("sd.fid.reference_images is set by the experiment (its resized COCO references); give "
                              "sd.coco_images, or sd.fid.reference_stats from `prunefit evaluate fid-ref`")

    def attack_source(self) -> tuple[str, str]:
        """(prompt file, format) the attacks start from."""
        return self.attack_prompts or self.adversarial_prompts, self.attack_prompt_format or self.prompt_format

    def key(self, n: int) -> str:
        """A short hash of everything a judged number depends on (with ``n`` adversarial prompts)."""
        spec = {**dataclasses.asdict(self), "n": n}
        for k in ("attack_prompts", "attack_prompt_format", "cache_dir"):
            spec.pop(k)
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _rows_of(path: Path, fmt: str, concept: str) -> list[dict]:
    """The artist prompt file's rows for ``concept`` (its ``concept`` / ``artist`` column), as prompt-file rows."""
    from prunefit.data.prompts import read_prompt_file

    recs = read_prompt_file(path, fmt=fmt)
    tagged = [r for r in recs if "concept" in r.extra or "artist" in r.extra]
    mine = [r for r in recs if concept in (r.extra.get("concept"), r.extra.get("artist"))] if tagged else recs
    return [{"id": r.id, "prompt": r.prompt, **({"seed": r.seed} if r.seed is not None else {})} for r in mine]


class SDJudge:
    """The SD protocol for one concept of one experiment: checked and prepared once, then ``measure`` per model."""

    def __init__(self, cfg: SDJudgingConfig, base_model: str, concept: str, kind: str, n: int, root: Path,
                 seed: int = 0, device: str = "auto") -> None:
        """``kind``: the concept's (``protocol.kind_of``); ``n``: adversarial prompts judged; ``root``: the
        experiment's output folder (the COCO cache's default home)."""
        if kind not in ("unsafe", "style"):
            raise ConfigError(f"Table 3 on SD measures an unsafe concept (nudity ASR) or an artist (artist rate); "
                              f"{concept!r} is of kind {kind}: erase nudity or an artist")
        self.cfg, self.base, self.concept, self.kind, self.n = cfg, base_model, concept, kind, n
        self.seed, self.device = seed, device
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(root) / "coco-val"
        self._stats: Optional[Path] = Path(cfg.fid.reference_stats) if cfg.fid.reference_stats else None

    # ---------------------------------------------------------------- before any training
    def check(self) -> None:
        """Refuse, in one line, a protocol that cannot run (a missing file, NudeNet absent, too few prompts)."""
        from prunefit.data.prompts import read_prompt_file

        c = self.cfg
        if self.kind == "unsafe":
            found = read_prompt_file(self._file(c.adversarial_prompts, "sd.adversarial_prompts",
                                                "make it with `prunefit data prompts mma-diffusion -o FILE`"),
                                     limit=self.n, fmt=c.prompt_format)
            if len(found) < self.n:
                raise DataError(f"{c.adversarial_prompts} holds {len(found)} prompts, eval_prompts asks for {self.n}; "
                                "lower eval_prompts or give a larger file")
            from prunefit.evaluation.nudity import nudenet_detector

            nudenet_detector()
        elif not _rows_of(self._file(c.artist_prompts, "sd.artist_prompts", "a CSV with prompt and concept columns"),
                          c.artist_prompt_format, self.concept):
            raise DataError(f"{c.artist_prompts} has no row for {self.concept!r} (its concept / artist column)")
        self._file(c.coco_annotations, "sd.coco_annotations", "COCO-2017 captions_val2017.json")
        if self._stats is None:
            self._file(c.coco_images, "sd.coco_images", "the COCO-2017 val2017/ folder, or set sd.fid.reference_stats")
        elif not self._stats.is_file():
            raise DataError(f"sd.fid.reference_stats {self._stats} not found; make it with `prunefit evaluate fid-ref`")

    @staticmethod
    def _file(path: Optional[str], key: str, hint: str) -> Path:
        if not path or not Path(path).exists():
            raise DataError(f"{key} {path!r} not found: {hint}")
        return Path(path)

    def prepare(self, log=print) -> Path:
        """The COCO captions (and resized references) and FID reference statistics, made once (``prunefit data
        coco-val`` and ``prunefit evaluate fid-ref``); returns the statistics file."""
        from prunefit.data.coco import prepare_coco_val

        c = self.cfg
        folder = self.cache / f"n{c.coco_n}-{c.coco_size}"
        sel = folder / "selection.json"
        want_ref = self._stats is None
        if not sel.is_file() or (want_ref and not (folder / "reference").is_dir()):
            log(f"[table3] COCO-2017 val: {c.coco_n} captions{' + references' if want_ref else ''} -> {folder}")
            prepare_coco_val(Path(c.coco_annotations), Path(c.coco_images) if want_ref else None, folder, c.coco_n,
                             c.coco_size)
        n = sum(1 for _ in csv.DictReader((folder / "prompts.csv").open()))
        if n < c.coco_n:
            raise DataError(f"{c.coco_annotations} has {n} images, sd.coco_n asks for {c.coco_n}; lower sd.coco_n")
        self.coco_prompts = folder / "prompts.csv"
        if self._stats is None:
            self._stats = self._fid_reference(folder / "reference", log)
        return self._stats

    def _fid_reference(self, images: Path, log) -> Path:
        """``prunefit evaluate fid-ref`` of the references under this protocol, reused when its file exists."""
        from prunefit.evaluation import fid as fidlib
        from prunefit.recipes.evaluate import fid_reference

        cfg = dataclasses.replace(self.cfg.fid, reference_n=self.cfg.coco_n)
        net = fidlib.feature_network(cfg)
        key = fidlib.stats_key(fidlib.reference_paths(str(images), cfg.reference_n), net.protocol)
        out = images.parent / f"fid-stats-{cfg.mode}-{cfg.features}-{key}.safetensors"
        if not out.is_file():
            log(f"[table3] FID reference statistics ({cfg.mode}, {cfg.features}, weights {cfg.weights or 'default'}) "
                f"-> {out}")
            fid_reference(str(images), cfg, str(out))
        return out

    # ---------------------------------------------------------------- per model
    def measure(self, model_path: str | Path, folder: Path, seed: Optional[int] = None) -> dict:
        """Generate and evaluate the model at ``model_path`` (a pipeline or an expert folder) into ``folder``: the
        concept's rate on its prompts (``asr_adversarial``) with its per-prompt flags (``shown``), FID (and the file
        of the generated features, ``fid_features``) and CLIP score on COCO-val, with each protocol. ``seed``: the
        generation seed (default the judge's)."""
        if self._stats is None:
            self.prepare()
        c = self.cfg
        seed = self.seed if seed is None else seed
        out = folder / f"eval-{c.key(self.n)}"
        if self.kind == "unsafe":
            run = self._generate(model_path, out / "adversarial", seed, prompt_file=c.adversarial_prompts,
                                 prompt_format=c.prompt_format, max_prompts=self.n)
            safety = self._evaluate(run, ["nudity_asr"], nudity=c.nudity)["nudity_asr"]
            rate, what = safety["values"]["asr"], "nudity_asr"
        else:
            rows = _rows_of(Path(c.artist_prompts), c.artist_prompt_format, self.concept)
            (out / "prompts").mkdir(parents=True, exist_ok=True)
            pfile = out / "prompts" / "artist.jsonl"
            pfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
            run = self._generate(model_path, out / "artist", seed, prompt_file=str(pfile), prompt_format="auto")
            labels = list(dict.fromkeys([*c.artist.labels, self.concept]))
            art = dataclasses.replace(c.artist, labels=labels, target=self.concept)
            safety = self._evaluate(run, ["artist"], artist=art)["artist"]
            rate, what = safety["values"]["zero_shot_accuracy"], "artist"
        coco = self._generate(model_path, out / "coco", seed, prompt_file=str(self.coco_prompts),
                              prompt_format="auto", max_prompts=c.coco_n)
        fid = dataclasses.replace(c.fid, reference_stats=str(self._stats), reference_n=c.coco_n)
        quality = self._evaluate(coco, ["fid", "clip_score"], fid=fid, clip_score=c.clip_score)
        return {"asr_adversarial": rate, "shown": flags(run, what), "fid": quality["fid"]["values"]["fid"],
                "fid_features": str(coco / "results.fid.safetensors"), "fid_stats": str(self._stats),
                "clip_score": quality["clip_score"]["values"]["clip_score"], "safety_metric": what,
                "guidance_scale": c.sampler.guidance_scale, "eval_dir": str(out), "samples": str(run),
                "protocol": {what: safety["protocol"], "fid": quality["fid"]["protocol"],
                             "clip_score": quality["clip_score"]["protocol"],
                             "sampler": dataclasses.asdict(c.sampler), "n_adversarial": self.n, "n_coco": c.coco_n}}

    def _generate(self, model_path: str | Path, out: Path, seed: int, **prompts) -> Path:
        """``prunefit generate`` of the model (an expert over its base, or a pipeline) into ``out``."""
        from prunefit.config.schema import GenerateConfig
        from prunefit.pruning.resolve import resolve_model
        from prunefit.recipes import generate

        ref = resolve_model(model_path, self.base).one_model()
        cfg = GenerateConfig(model=ref.base, expert=ref.expert, output_dir=str(out), seed=seed,
                             dtype=self.cfg.dtype, device=self.device, sampler=self.cfg.sampler, grid_max_images=16,
                             **prompts)
        return generate.main(cfg).output_dir

    def _evaluate(self, run: Path, metrics: list[str], **sections) -> dict:
        """``prunefit evaluate`` of ``metrics`` on ``run``: {metric: {values, protocol}}."""
        from prunefit.config.sections import build
        from prunefit.recipes import evaluate
        from prunefit.recipes.evaluate import EvaluateConfig

        res = evaluate.main(build(EvaluateConfig, run_dir=str(run), metrics=metrics, device=self.device, **sections))
        return {m: res.document["metrics"][m] for m in metrics}


def flags(run: Path, metric: str) -> list[int]:
    """Per prompt of a judged run (manifest order): 1 where ``metric`` (nudity_asr, artist) flagged its image, from
    the ids its evaluation listed (``results.<metric>.per_image.json``; absent: none flagged)."""
    from prunefit.evaluation.context import read_manifest_rows

    side = Path(run) / f"results.{metric}.per_image.json"
    hit = json.loads(side.read_text()) if side.is_file() else {}
    return [int(bool(hit.get(str(r["id"])))) for r in read_manifest_rows(Path(run))]


def read_features(path: str | Path) -> np.ndarray:
    """The generated images' FID features [N, D] (float64) that the fid metric saved for a judged run."""
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise DataError(f"FID features {path} not found: the cell was judged before they were kept; delete its "
                        "eval-*.json to judge it again")
    return load_file(str(path))["features"].astype(np.float64)


class FidToReference:
    """The bootstrap statistic of FID on SD: the mean over seeds of the Fréchet distance between each seed's generated
    features [N, D] and the fixed reference statistics (mu [D], sigma [D, D]: COCO-val's, made once by `prunefit
    evaluate fid-ref`). Only the generated images are resampled: the reference is the protocol's, not a sample of
    the experiment. It is the FID the fid metric reports (the eigenvalues of R S R, R = sigma^(1/2) computed once,
    are those of S sigma), at one symmetric eigendecomposition per draw instead of a general sqrtm (about 30 s at
    D = 2048 on one thread). As for FJD, resampled FIDs are biased upward (duplicates narrow S): use it with
    ``bootstrap_interval(..., method="centred")``."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        from scipy import linalg

        self.mu = np.asarray(mu, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        w, v = linalg.eigh((sigma + sigma.T) / 2)
        self.root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self.trace = float(np.trace(sigma))

    @classmethod
    def from_file(cls, path: str | Path) -> "FidToReference":
        """The statistic against a reference statistics file."""
        from prunefit.evaluation.fid import load_stats

        mu, sigma, _ = load_stats(Path(path))
        return cls(mu.double().numpy(), sigma.double().numpy())

    def distance(self, features: np.ndarray) -> float:
        """FID of one set of generated features [N, D] (N >= 2) against the reference."""
        from scipy import linalg

        f = np.asarray(features, dtype=np.float64)
        if f.shape[0] < 2:
            raise DataError(f"FID needs at least 2 images per set, got {f.shape[0]}")
        mu = f.mean(0)
        centred = f - mu
        s = centred.T @ centred / (f.shape[0] - 1)
        m = self.root @ s @ self.root
        ev = linalg.eigvalsh((m + m.T) / 2)
        diff = mu - self.mu
        return float(diff @ diff + np.trace(s) + self.trace - 2 * np.sqrt(np.clip(ev, 0, None)).sum())

    def __call__(self, groups: Sequence[np.ndarray]) -> float:
        return float(np.mean([self.distance(g) for g in groups]))
