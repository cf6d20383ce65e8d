#!/usr/bin/env bash
# The README demo: synthetic cartoons -> catalog -> (caption -> train as those stages land).
# Everything lives in ./demo so it can be deleted in one go.
set -euo pipefail
mkdir -p demo
cd demo
export DE_CATALOG="$PWD/catalog.duckdb"

echo "== 1. generate sample cartoons (known cuts)"
de synth raw_videos/ --seconds 12

echo "== 2. ingest: scene split + stats + keyframes into $DE_CATALOG"
# the demo folder also holds a broken file, to show how failures are reported
printf 'not a video' > raw_videos/broken.mp4
de ingest raw_videos/ --no-progress || echo "(exit $? : one file is broken on purpose)"

echo "== 3. what was found"
de stats
de query "duration_s > 2" --columns clip_id,video_path,start_s,end_s,motion_score,colorfulness

echo "== 4. caption with the tiny random Qwen2-VL (offline). Generation is constrained to the caption"
echo "   schema, so every answer parses; the labels are still noise (sampled at temperature 1 so clips differ)"
de caption --model tiny --max-frames 4 --temperature 1.0 --no-progress
de captions list
de stats

echo "== 5. train a LoRA on a tag query with the tiny random SANA-Video (4 steps, 9 frames at 64x64)"
# the design card's query; the random captioner may tag no clip 'chase': then the most common tag
TAG=chase
if [ "$(de query "tags LIKE '%chase%'" --json | python -c 'import json, sys; print(len(json.load(sys.stdin)))')" = "0" ]; then
  TAG=$(de query "tag_list IS NOT NULL" --json | python -c "
import collections, json, sys
print(collections.Counter(t for r in json.load(sys.stdin) for t in r['tag_list']).most_common(1)[0][0])")
  echo "(no clip is tagged 'chase' by the random captioner: training on its most common tag, '$TAG')"
fi
rm -rf runs/demo-tiny
train --query "tags LIKE '%$TAG%'" --preset tiny --output-dir runs/demo-tiny --no-progress
echo
echo "gallery: $PWD/runs/demo-tiny/gallery.md  (HTML: $PWD/runs/demo-tiny/gallery.html)"

echo "== 5b. curate with your model: per-clip training loss (noise with random models) and near-duplicates"
de query "train_loss_z IS NOT NULL" --columns clip_id,train_loss_z,train_samples,tags
de dedup
# ... in aspect-ratio buckets (the 4:3 cartoons keep their sides) and frame buckets (short clips count)
train --query "tags LIKE '%$TAG%' AND NOT rejected AND coalesce(train_loss_z, 0) < 2" --dedup --preset tiny \
  --buckets auto --frame-buckets 5,9 --dry-run

echo "== 6. experiments on the demo run (random models: this shows the mechanics, not quality)"
train eval runs/demo-tiny --query "1=1" --captioner tiny --limit 2 --steps 2 \
  --caption-max-frames 4 --caption-max-pixels 12544 --no-progress
train compare runs/demo-tiny --output-dir runs/compare
echo
echo "done: everything is in $PWD (catalog.duckdb, catalog_cache/, runs/)"
echo
echo "== 7. browse it: clips, labellings, curation, and the run's gallery and reports"
echo "   cd $PWD && de serve --runs runs"
echo "   then open the link it prints (http://127.0.0.1:8000/?token=...: the token lets that browser edit labels)"
