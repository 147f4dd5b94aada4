"""Obtain a published prompt set (I2P, MMA-Diffusion, Ring-A-Bell, P4D, UnlearnDiffAtk) as a prompt file + provenance.

``prunefit data prompts NAME -o FILE [--from LOCAL]``: the set is downloaded from where its authors host it (a
Hugging Face dataset at a resolved commit, or UnlearnDiffAtk's CSV from its GitHub repository at a pinned commit,
checked against its sha256), or converted from a local copy (a file, or a folder such as a dataset snapshot). The
result is a ``.csv`` or ``.jsonl`` prompt file that ``read_prompt_file`` reads with the default format (``id``,
``prompt``, ``seed`` columns, every other column of the source kept), and ``FILE.meta.json`` beside it: the source
(repo id and revision, or local path, with each file's sha256), the protocol (which column is the prompt, id, seed
and guidance, the filters applied, rows in and out) and the output's sha256.

Both files are written atomically, the sidecar first: ``FILE`` exists only when its sidecar is complete. An existing
``FILE`` is never replaced without ``force``. ``HF_HUB_OFFLINE=1`` refuses any download (convert a copy with
``--from``); a gated set the token cannot read is refused with where to ask for access.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from prunefit.errors import ConfigError, DataError, OutputError
from prunefit.utils.io import atomic_write_bytes, atomic_write_json, jsonl_lines


@dataclass(frozen=True)
class PromptSet:
    """Where a published prompt set lives and how its rows read (columns as its authors released them)."""

    name: str
    title: str
    repo_id: str
    """Hugging Face dataset id; "" when the set is hosted elsewhere (``github``)."""
    prompt_column: str
    gated: str = ""
    """"" (open), "automatic" (accept the conditions on the dataset page) or "manual" (the authors approve)."""
    github: Optional[tuple[str, str, str, str]] = None
    """(repository, commit, path, sha256) of a set hosted on GitHub."""
    headerless_lines: bool = False
    """Local copies may be one prompt a line without a header (Ring-A-Bell's nudity copies)."""
    protocol: str = ""
    """What the source says about the set's use, recorded in the sidecar."""

    def page(self) -> str:
        """The set's page: the dataset page on the Hub, else the file on GitHub."""
        if self.repo_id:
            return f"https://huggingface.co/datasets/{self.repo_id}"
        repo, commit, path, _ = self.github
        return f"https://github.com/{repo}/blob/{commit}/{path}"


SETS: dict[str, PromptSet] = {s.name: s for s in (
    PromptSet("i2p", "I2P (Schramowski et al., CVPR 2023)", "AIML-TUDA/i2p", "prompt",
              protocol="4,703 Lexica prompts; columns prompt, categories, hard, inappropriate_percentage, "
              "nudity_percentage, ..., sd_seed, sd_guidance_scale, sd_image_width/height, sd_model. Nudity "
              "studies keep a subset: --category sexual, or --min-nudity PCT on nudity_percentage."),
    PromptSet("mma-diffusion", "MMA-Diffusion NSFW adversarial prompts (Yang et al., CVPR 2024)",
              "YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark", "adv_prompt", gated="automatic",
              protocol="1,000 adversarial prompts (adv_prompt) for NSFW target prompts (target_prompt); also "
              "sanitized_adv_prompt, success_against_sanitization_defense and 1,000 unpaired clean_prompt; no "
              "seeds (a run's seed derives one per prompt). --prompt-column picks another text column."),
    PromptSet("ring-a-bell", "Ring-A-Bell nudity prompts (Tsai et al., ICLR 2024)", "Chia15/RingABell-Nudity",
              "prompt", gated="automatic", headerless_lines=True,
              protocol="inversion prompts for nudity (prompt, evaluation_seed); local copies may be one prompt a "
              "line without a header."),
    PromptSet("p4d", "P4D ideal prompts (Chin et al., ICML 2024)", "joycenerd/p4d", "prompt", gated="manual",
              protocol="I2P-derived prompts (prompt, evaluation_seed, evaluation_guidance, case_number, ...); the "
              "authors approve access requests (2-3 days). The P4D GitHub repository's data/*.csv have the same "
              "layout (--from)."),
    PromptSet("unlearndiffatk", "UnlearnDiffAtk nudity prompts (Zhang et al., ECCV 2024)", "", "prompt",
              github=("OPTML-Group/Diffusion-MU-Attack", "0eea64d54c96b9c7a7cdf21682eac5bb32d9467b",
                      "prompts/nudity.csv", "0a40f6e63bca976513d1d56df71480239ba1eb5c7a9de4df2f535d80f6e0eccd"),
              protocol="142 I2P prompts (prompt, evaluation_seed, evaluation_guidance, case_number, categories, "
              "nudity_percentage, ...); the attack renders each at its evaluation_seed."),
)}
"""The sets ``prunefit data prompts`` knows, by name."""

_ID_COLUMNS = ("case_number", "id")
_SEED_COLUMNS = ("evaluation_seed", "sd_seed", "seed")
_GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale", "guidance_scale", "guidance")
_INDEX_COLUMNS = ("", "Unnamed: 0")  # a pandas index written into the CSV
_DATA_SUFFIXES = (".csv", ".parquet", ".jsonl")
"""Files read from a folder or a Hub snapshot; a single ``--from`` file may also be .json (a list) or .txt."""
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def _access_hint(spec: PromptSet) -> str:
    wait = " (the authors approve requests by hand)" if spec.gated == "manual" else ""
    return (f"request access at {spec.page()}{wait}, log in with `huggingface-cli login` (or set HF_TOKEN) and "
            f"re-run; or convert a copy you have with --from FILE_OR_DIR")


# ---------------------------------------------------------------- reading local copies
def _read_csv(path: Path, spec: PromptSet, column: str) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if column not in fields and spec.headerless_lines:
            fh.seek(0)
            return [{column: ln.strip()} for ln in fh.read().splitlines() if ln.strip()]
        return [dict(r) for r in reader]


def _read_file(path: Path, spec: PromptSet, column: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if suffix == ".jsonl":
            return [row for _, row in jsonl_lines(path, torn="raise")]
        if suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(rows, list):
                raise DataError(f"{path}: expected a JSON list of objects")
            return rows
        if suffix == ".txt":
            return [{column: ln.strip()} for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        return _read_csv(path, spec, column)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except (json.JSONDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {path} ({exc}); give a .csv, .parquet, .jsonl or .json file") from None


def _data_files(source: Path, pattern: Optional[str]) -> list[Path]:
    """The data files of ``source``: the file itself, or a folder's tabular files (README, dot-files skipped)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(f"--from {source}: no such file or folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in _DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if pattern:
        files = [p for p in files if fnmatch.fnmatch(p.relative_to(source).as_posix(), pattern)
                 or fnmatch.fnmatch(p.name, pattern)]
    if not files:
        raise DataError(f"{source} holds no data file ({', '.join(_DATA_SUFFIXES)})"
                        + (f" matching {pattern!r}" if pattern else ""))
    return files


def _load_rows(files: list[Path], root: Path, spec: PromptSet, column: str) -> list[tuple[str, int, dict]]:
    """(file label, row position in its file, row) over all files."""
    out = []
    for path in files:
        label = path.name if path == root else path.relative_to(root).as_posix()
        rows = _read_file(path, spec, column)
        if rows and not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path}: every row must be an object with named columns")
        if rows and column not in rows[0]:
            raise DataError(f"{path}: no {column!r} column for the {spec.name} prompts; found {sorted(rows[0])}"
                            " (--prompt-column picks another)")
        out += [(label, i, r) for i, r in enumerate(rows)]
    return out


# ---------------------------------------------------------------- downloading
def _transport_errors(hub_error: type) -> tuple[type, ...]:
    """The HTTP library's own error base (httpx's or requests'), which the Hub client lets connection errors raise."""
    return tuple(c for c in hub_error.__mro__[1:]
                 if c.__module__ != "builtins" and not c.__module__.startswith("huggingface_hub"))


def _download_hub(spec: PromptSet, revision: Optional[str], dest: Path) -> dict[str, Any]:
    """Snapshot the dataset's data files into ``dest``; returns the source record (repo id, resolved commit)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().dataset_info(spec.repo_id, revision=revision)
        snapshot_download(spec.repo_id, repo_type="dataset", revision=info.sha, local_dir=str(dest),
                          allow_patterns=[f"*{s}" for s in _DATA_SUFFIXES])
    except GatedRepoError:
        raise DataError(f"{spec.repo_id} is gated and this Hugging Face token has no access: "
                        + _access_hint(spec)) from None
    except RevisionNotFoundError:
        raise ConfigError(f"{spec.repo_id} has no revision {revision!r}; give a branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise DataError(f"{spec.repo_id} not found or not visible to this token: " + _access_hint(spec)) from None
    except (HfHubHTTPError, OSError, *_transport_errors(HfHubHTTPError)) as exc:
        raise DataError(f"cannot download {spec.repo_id} from the Hugging Face Hub ({str(exc).splitlines()[0]}); "
                        "check the network, or convert a local copy with --from FILE_OR_DIR") from None
    return {"kind": "huggingface", "repo_id": spec.repo_id, "revision": info.sha, "requested_revision": revision,
            "page": spec.page()}


def _download_github(spec: PromptSet, dest: Path) -> dict[str, Any]:
    """Fetch the set's file at its pinned commit into ``dest`` and check its sha256."""
    repo, commit, path, sha = spec.github
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (a fixed https URL)
            data = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot download {url} ({getattr(exc, 'reason', exc)}); download it yourself and "
                        "convert it with --from FILE") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise DataError(f"{url} does not have the expected sha256 {sha}; nothing was written")
    (dest / Path(path).name).write_bytes(data)
    return {"kind": "github", "repo": repo, "commit": commit, "path": path, "url": url, "page": spec.page()}


# ---------------------------------------------------------------- conversion
def _pick(columns, candidates: tuple[str, ...]) -> Optional[str]:
    return next((c for c in candidates if c in columns), None)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _convert(rows: list[tuple[str, int, dict]], column: str, category: Optional[str], min_nudity: Optional[float],
             several: bool) -> tuple[list[dict], dict]:
    """Rows in the reader's layout (``id``, ``prompt``, ``seed``, then the source's other columns) and the protocol."""
    from prunefit.data.prompts import RESERVED_COLUMNS

    columns = set().union(*(r.keys() for _, _, r in rows)) if rows else set()
    id_col, seed_col = _pick(columns, _ID_COLUMNS), _pick(columns, _SEED_COLUMNS)
    guidance_col = _pick(columns, _GUIDANCE_COLUMNS)
    for name, need in (("--category", category is not None and "categories"),
                       ("--min-nudity", min_nudity is not None and "nudity_percentage")):
        if need and need not in columns:
            raise ConfigError(f"{name} filters on the {need!r} column, which this set does not have")
    out = []
    for label, i, row in rows:
        if category is not None and category.lower() not in [
                c.strip().lower() for c in str(row.get("categories") or "").split(",")]:
            continue
        if min_nudity is not None:
            try:
                if float(row.get("nudity_percentage") or 0) < min_nudity:
                    continue
            except ValueError:
                raise DataError(f"{label}: row {i + 1}: nudity_percentage {row['nudity_percentage']!r} is not "
                                "a number") from None
        rid = str(row.get(id_col) if id_col and row.get(id_col) not in (None, "") else i).strip()
        rid = f"{_SAFE.sub('_', Path(label).stem)}-{rid}" if several else rid
        seed = row.get(seed_col) if seed_col else None
        try:
            seed = "" if seed in (None, "") else int(float(seed))
        except ValueError:
            raise DataError(f"{label}: row {i + 1}: {seed_col} {seed!r} is not an integer seed") from None
        new = {"id": rid, "prompt": str(_cell(row.get(column))).strip(), "seed": seed}
        for k, v in row.items():
            if k in (column, id_col, seed_col) or k in _INDEX_COLUMNS:
                continue
            new[f"source_{k}" if k in RESERVED_COLUMNS or k in new else k] = _cell(v)
        if several:
            new["source_file"] = label
        out.append(new)
    protocol = {"prompt_column": column, "id_column": id_col or "row position in its file (0-based)",
                "seed_column": seed_col, "guidance_column": guidance_col,
                "filters": {"category": category, "min_nudity_percentage": min_nudity},
                "rows_in_source": len(rows), "rows_written": len(out)}
    return out, protocol


def _serialize(rows: list[dict], suffix: str) -> bytes:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def prepare_prompt_set(name: str, output: Path, source: Optional[Path] = None, force: bool = False,
                       revision: Optional[str] = None, files: Optional[str] = None,
                       prompt_column: Optional[str] = None, category: Optional[str] = None,
                       min_nudity: Optional[float] = None) -> dict[str, Any]:
    """``prunefit data prompts``: write set ``name`` (downloaded, or converted from ``source``) as the prompt file
    ``output`` (.csv or .jsonl) and ``output.meta.json``; returns the paths and the number of prompts."""
    from prunefit.data.prompts import records_from_rows

    if name not in SETS:
        raise ConfigError(f"unknown prompt set {name!r}; available: {', '.join(SETS)}")
    spec, output = SETS[name], Path(output)
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"--output {output}: give a .csv or .jsonl file name")
    meta_path = output.with_name(output.name + ".meta.json")
    if output.exists() and not force:
        raise OutputError(f"{output} already exists; pass --force to replace it (nothing was written)")
    if revision and source is not None:
        raise ConfigError("--revision selects a Hub revision; a --from copy has none (give one or the other)")
    column = prompt_column or spec.prompt_column
    with tempfile.TemporaryDirectory(prefix="prunefit-prompts-") as tmp:
        if source is not None:
            root = Path(source).expanduser()
            origin: dict[str, Any] = {"kind": "local", "path": str(root.resolve())}
        else:
            if _offline():
                raise DataError(f"HF_HUB_OFFLINE is set, so the {name} prompts cannot be downloaded; unset it, or "
                                "convert a local copy with --from FILE_OR_DIR")
            root = Path(tmp)
            origin = (_download_hub(spec, revision, root) if spec.repo_id
                      else _download_github(spec, root))
        data = _data_files(root, files)
        origin["files"] = [{"path": p.name if p == root else p.relative_to(root).as_posix(), "sha256": _sha256(p)}
                           for p in data]
        rows, protocol = _convert(_load_rows(data, root, spec, column), column, category, min_nudity, len(data) > 1)
    records_from_rows(rows, f"the {name} prompts")  # ids unique and usable, every prompt non-empty
    payload = _serialize(rows, output.suffix.lower())
    meta = {"set": name, "title": spec.title, "source": origin,
            "protocol": {**protocol, "note": spec.protocol},
            "output": {"path": output.name, "prompt_format": "auto", "rows": len(rows),
                       "sha256": hashlib.sha256(payload).hexdigest()},
            "written_by": "prunefit data prompts"}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, meta, indent=1)  # the sidecar first: FILE exists only with its sidecar
        atomic_write_bytes(output, payload)
    except OSError as exc:
        raise OutputError(f"cannot write {output} ({exc.strerror or exc}); choose a writable path") from None
    return {"prompts": output, "meta": meta_path, "rows": len(rows)}
