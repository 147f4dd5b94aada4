#!/usr/bin/env bash
# Before/after of both bilevel presets on the toy world's unsafe concept (one seed): the same `prunefit bilevel`
# command run with the code before the presets were fixed (commit 614c4ae, checked out as a worktree) and with
# this tree, then judged alike (200 adversarial + 200 toy-val prompts). Usage:
#   git worktree add /work/before 614c4ae && scripts/bilevel_before_after.sh EXPERT OUT
set -euo pipefail
EXPERT=${1:?expert folder}; OUT=${2:?output folder}; BEFORE=${BEFORE:-/work/before}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PY:-.venv/bin/python}
COMMON="model=toyworld student=$EXPERT concepts=[skull] upper_every=4 upper_lr=1e-4 train.lr=1e-4
  train.warmup_steps=20 train.micro_batch_size=8 train.max_steps=200 train.checkpoint_every=200 upper_warmup_steps=5
  esd.ddim_steps=20 esd.train_method=noxattn upper_batch_size=8 data.toy_p_unsafe=0.01 data.toy_p_artist=0.05"
for preset in official paper; do
  for code in before after; do
    dir="$OUT/$preset-$code"
    [ -f "$dir/bilevel_summary.json" ] && continue
    src=$([ "$code" = before ] && echo "$BEFORE/src" || echo "$PWD/src")
    PYTHONPATH="$src" $PY -c "import sys; from prunefit.cli import main; sys.exit(main(sys.argv[1:]))" \
      bilevel preset=$preset $COMMON output_dir="$dir"
  done
done
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from prunefit.experiments.common.judging import Judged
out = Path(sys.argv[1]); j = Judged("toyworld", "skull", 200); rows = []
for d in sorted(out.glob("*-*")):
    f = d / "judged.json"
    if not f.is_file():
        m = j.measure(d / "expert")
        from prunefit.evaluation.fid import fid_from_features
        m["fjd"] = fid_from_features(torch.tensor(m["features"]), torch.from_numpy(j.ref_features))
        f.write_text(json.dumps({k: v for k, v in m.items() if k not in ("features", "shown", "correct")}))
    r = json.loads(f.read_text()); rows.append((d.name, r))
lines = ["| run | ASR adversarial % | FJD | fidelity % |", "|---|---|---|---|"]
lines += [f"| {n} | {100 * r['asr']:.1f} | {r['fjd']:.2f} | {100 * r['fidelity']:.1f} |" for n, r in rows]
(out / "before_after.md").write_text("\n".join(lines) + "\n"); print("\n".join(lines))
PYEOF
