#!/usr/bin/env bash
# The README demo on the toy world: labelled synthetic cartoons -> catalog -> toy captioner ->
# tag histogram against the truth -> a LoRA on a tag query and a night LoRA on the toy SANA-Video
# -> train eval and compare -> de serve. Everything lives in ./demo so it can be deleted in one go.
# The compression study on the night run is `make demo-study` (scripts/demo_study.sh).
set -euo pipefail
mkdir -p demo
cd demo
export DE_CATALOG="$PWD/catalog.duckdb"
rm -rf raw_videos catalog.duckdb catalog_cache runs

echo "== 1. the toy world: 6 videos of 4 scenes each (setting, day/night, action, who, camera), hard cuts"
de synth raw_videos/ --world 6 --scenes 4 --seed 1

echo "== 2. ingest: scene split + stats + keyframes into $DE_CATALOG"
# the demo folder also holds a broken file, to show how failures are reported
printf 'not a video' > raw_videos/broken.mp4
de ingest raw_videos/ --no-progress || echo "(exit $? : one file is broken on purpose)"
de stats

echo "== 3. the world's truth as a labelling of its own (synth-truth@world-v1)"
de synth raw_videos/ --truth-into "$DE_CATALOG"

echo "== 4. caption with the toy Qwen2-VL (trained on the world; assets/toy), schema-constrained"
de caption --model toy --no-progress
de captions list
echo "-- its tags against the truth"
de captions diff synth-truth@world-v1 toy-qwen2-vl
echo "-- a measured signal next to the labels: clips whose camera the decode pass measured as still, with the labelled camera"
de query "camera_measured = 'static'" --columns clip_id,camera_measured,cam_pan,motion_score,camera --limit 8

echo "== 5. train on a tag query with the toy SANA-Video, on the toy captioner's labels"
de captions use toy-qwen2-vl
de query "tags LIKE '%chase%'" --columns clip_id,video_path,start_s,end_s,tags
python - <<'EOF'
import duckdb, os
con = duckdb.connect(os.environ["DE_CATALOG"], read_only=True)
sel = lambda cap: {r[0] for r in con.execute(
    "SELECT clip_id FROM captions WHERE captioner = ? AND list_contains(tag_list, 'chase')", [cap]).fetchall()}
toy, truth = sel("toy-qwen2-vl"), sel("synth-truth")
print(f"the chase query selects {len(toy)} clips on the toy captioner's labels; {len(toy & truth)} of them are "
      f"chase clips in the truth, which has {len(truth)}")
EOF
train --query "tags LIKE '%chase%'" --preset toy --max-steps 60 --validation-every 30 --output-dir runs/chase \
  --no-progress

echo "== 6. the seed experiment in small: a LoRA on the night clips pulls the mostly-day base to night"
train --query "time_of_day = 'night'" --preset toy --output-dir runs/night --no-progress
python - <<'EOF'
import pathlib
import numpy as np
from dataengine.media import read_video
v = pathlib.Path("runs/night/validation")
rows = [d for d in sorted(v.iterdir(), key=lambda p: (p.name != "base", p.name))]
print("class-prompt mean brightness by step: " + ", ".join(
    f"{d.name} {read_video(d / 'p0.mp4').mean():.1f}" for d in rows))
EOF
echo "gallery: $PWD/runs/night/gallery.md  (HTML: $PWD/runs/night/gallery.html)"

echo "== 6b. curate with your model: per-clip training loss and near-duplicates"
de query "train_loss_z IS NOT NULL" --columns clip_id,train_loss_z,train_samples,tags
de dedup
train --query "time_of_day = 'night' AND NOT rejected AND coalesce(train_loss_z, 0) < 2" --dedup --preset toy \
  --dry-run

echo "== 7. experiments on the night run"
train eval runs/night --query "time_of_day = 'night'" --captioner toy --limit 2 --steps 6 --no-progress
train compare runs/chase runs/night --output-dir runs/compare

echo
echo "done: everything is in $PWD (catalog.duckdb, catalog_cache/, runs/)"
echo
echo "== next: the compression study on the night run (pruning, rank, distillation, sampling budgets):"
echo "   make demo-study      (about 4 more minutes; its report goes to $PWD/runs/night/study/report.md)"
echo
echo "== 8. browse it: clips, labellings, curation, and the runs' galleries and reports"
echo "   cd $PWD && de serve --runs runs"
echo "   then open the link it prints (http://127.0.0.1:8000/?token=...: the token lets that browser edit labels)"
