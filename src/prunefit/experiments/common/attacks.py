"""Attack bookkeeping of experiments: the "ASR under attack" entries of judged rows, via `prunefit attack`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from prunefit.config.load import load_config
from prunefit.experiments.common.stages import concept_slug
from prunefit.recipes import attack as attack_command
from prunefit.recipes.attack import AttackConfig, AttackResult


def attack_asr(model_path: str | Path, base_model: str, concept: str, attack: str = "unlearndiff",
               budget: Optional[dict] = None, n_prompts: int = 32, seed: int = 0,
               output_dir: Optional[str | Path] = None, prompts: Optional[str] = None,
               device: str = "auto", prompt_format: str = "auto") -> AttackResult:
    """Attack ``model_path`` (a pipeline or expert folder, or the base model itself) for ``concept`` and return its
    pre- and post-attack ASR. ``budget`` overrides the attack's config section (e.g. {"iterations": 20});
    ``prompts`` / ``prompt_format``: the prompt file the attack starts from (None: the toy concept's plain set);
    ``output_dir`` defaults to <model_path>/attacks/<attack>-<concept> (finished runs are reused)."""
    if output_dir is None:
        root = Path(model_path) if Path(model_path).is_dir() else Path("runs") / "attacks" / str(model_path)
        output_dir = root / "attacks" / f"{attack}-{concept_slug(concept)}"
    ov = [f"model={json.dumps(str(model_path))}", f"base_model={json.dumps(base_model)}",
          f"attack={json.dumps(attack)}", f"concept={json.dumps(concept)}", f"n_prompts={n_prompts}",
          f"seed={seed}", f"device={device}", f"output_dir={json.dumps(str(output_dir))}"]
    if prompts:
        ov += [f"prompts={json.dumps(prompts)}", f"prompt_format={json.dumps(prompt_format)}"]
    ov += [f"{attack}.{k}={json.dumps(v)}" for k, v in (budget or {}).items()]
    return attack_command.main(load_config(AttackConfig, [], ov))


def add_attacks(entry: dict, *, model: str | Path, base_model: str, concept: str, attacks: list[str],
                budgets: dict, n_prompts: int, seed: int, folder: Path, device: str = "auto", log=print,
                prepare=None, prompts: Optional[str] = None, prompt_format: str = "auto") -> bool:
    """Add the missing "ASR under attack" entries of an experiment's judged row (``entry['attacks'][name]``,
    each run in ``folder/attack-<name>``); ``prepare(name, i, todo)`` may seed a folder first; ``prompts``: the
    prompt file attacked (SD; None = the toy concept's plain set). True if any ran."""
    done = entry.setdefault("attacks", {})
    todo = [a for a in attacks if a not in done]
    for i, a in enumerate(todo):
        log(f"[attack] {concept}: {a} on {folder.name}")
        t0 = time.time()
        if prepare is not None:
            prepare(a, i, todo)
        res = attack_asr(model, base_model, concept, a, budgets.get(a), n_prompts, seed,
                         output_dir=folder / f"attack-{a}", device=device, prompts=prompts,
                         prompt_format=prompt_format)
        done[a] = {**result_row(res), "seconds": round(time.time() - t0, 1)}
    return bool(todo)


def attack_label(entry: dict) -> str:
    """'pre -> post' in %, with the soft-prompt ASR when the attack has one."""
    soft = f" (soft {100 * entry['asr_soft']:.0f})" if entry.get("asr_soft") is not None else ""
    return f"{100 * entry['pre_asr']:.0f} → {100 * entry['asr']:.0f}{soft}"


def result_row(res: AttackResult) -> dict:
    """The numbers an experiment table keeps of an attack run."""
    return {"pre_asr": res.pre_asr, "asr": res.asr, "asr_soft": res.asr_soft, "n": res.n, "attacked": res.attacked,
            "budget": res.protocol["budget"], "output_dir": str(res.output_dir)}

