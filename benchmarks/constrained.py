"""Benchmark: what schema-constrained decoding costs, at batch 8 on the tiny random Qwen2-VL.

Measured in one run, on the same prepared batches of synthetic clips:
  - the per-step cost: each batch is generated constrained (it stops when every row's object is
    complete), then free with exactly as many new tokens forced (min = max = the constrained
    run's length), so both runs make the same number of forward steps over the same inputs;
    the ratio of the two times is the grammar's overhead per step;
  - the grammar's own share (time inside the logits processor) and its one-off compile time;
  - end to end, `de caption`'s runner: clips/s constrained (default token bound) against free
    (default 256 tokens), which also differ in how many tokens each run generates.
Usage: python benchmarks/constrained.py [--clips 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make_catalog(tmp: Path, clips: int) -> Path:
    from dataengine.analyze import IngestOptions
    from dataengine.ingest import ingest_paths
    from dataengine.scenes import SplitOptions
    from dataengine.synth import make_cartoon

    for i in range(max(1, clips // 8)):
        cuts, t = [], 0.0
        for k in range(8):
            t += 1.4 + 0.25 * k + 0.05 * i
            cuts.append(round(t, 3))
        make_cartoon(tmp / f"v{i}.mp4", duration_s=t + 1.5, fps=24, size=(640, 360), cuts=cuts[:-1])
    cat = tmp / "c.duckdb"
    ingest_paths(cat, [tmp], IngestOptions(split=SplitOptions(min_duration=1.0)), progress=False)
    return cat


def per_step(cap, batches, con, free, batch: int) -> None:
    """The same batches generated constrained, then free with as many new tokens forced: the same
    number of forward steps over the same inputs. The first pass warms up; the second is reported."""
    from dataengine.caption import schema as schema_mod
    from dataengine.caption.prompts import SamplingParams

    orig_call = schema_mod.GrammarLogitsProcessor.__call__
    spent, calls = [0.0], [0]

    def timed_call(self, input_ids, scores):
        t = time.perf_counter()
        out = orig_call(self, input_ids, scores)
        spent[0] += time.perf_counter() - t
        calls[0] += 1  # one call per decoding step
        return out

    schema_mod.GrammarLogitsProcessor.__call__ = timed_call
    text_c, text_f = con.render(), free.render()
    try:
        for _ in range(2):
            steps_total, t_con, t_free, spent[0] = 0, 0.0, 0.0, 0.0
            for b in batches:
                vids, metas = [p.video for p in b], [p.metadata for p in b]
                calls[0] = 0
                t = time.perf_counter()
                cap.generate(vids, text_c, con.sampling, metas, schema=con.schema)
                t_con += time.perf_counter() - t
                n_steps = calls[0]
                forced = SamplingParams(**{**free.sampling.__dict__, "max_new_tokens": n_steps})
                t_free += _forced_free(cap, vids, text_f, forced, metas, n_steps)
                steps_total += n_steps
    finally:
        schema_mod.GrammarLogitsProcessor.__call__ = orig_call
    t_proc = spent[0]
    print(f"per step, batch {batch}, {steps_total} steps over the same batches: constrained {t_con:.2f} s, "
          f"free {t_free:.2f} s -> {100 * (t_con / t_free - 1):+.1f}% time "
          f"({steps_total * batch / t_con:.0f} vs {steps_total * batch / t_free:.0f} row-tokens/s); "
          f"inside the grammar processor: {t_proc:.2f} s ({100 * t_proc / t_con:.1f}% of constrained)")


def _forced_free(cap, vids, text, sampling, metas, n_steps: int) -> float:
    """Seconds of a free generation made to run exactly `n_steps` new tokens."""
    orig_gen = cap.model.generate

    def forced_gen(**kw):
        return orig_gen(**kw, min_new_tokens=n_steps)

    cap.model.generate = forced_gen
    try:
        t = time.perf_counter()
        cap.generate(vids, text, sampling, metas)
        return time.perf_counter() - t
    finally:
        cap.model.generate = orig_gen


def end_to_end(cat, cap, con, free, batch: int) -> None:
    """`de caption`'s runner, decode overlapped: clips/s constrained against free."""
    from dataengine.caption.run import caption_clips, select_clips

    def run(name, prompt):
        cap.name = name
        todo, _ = select_clips(cat, name, prompt.version, query=None, limit=None, overwrite=False,
                               retry_failed=False)
        s = caption_clips(cat, cap, prompt, todo, batch_size=batch, progress=False)
        print(f"  {name:<12} {s.seconds:6.2f} s  {s.attempted / s.seconds:6.2f} clips/s  parsed "
              f"{s.labelled}/{s.attempted}  max_new_tokens {prompt.sampling.max_new_tokens}")
        return s

    print("end to end (de caption runner, decode overlapped):")
    f = run("free", free)
    c = run("constrained", con)
    print(f"clips/s constrained / free: {(c.attempted / c.seconds) / (f.attempted / f.seconds):.2f}x "
          "(the runs generate different numbers of tokens; the per-step line above is the like-for-like cost)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    import torch

    from dataengine.caption.models import load_captioner
    from dataengine.caption.prompts import SamplingParams, load_prompt
    from dataengine.caption.run import Preparer, select_clips
    from dataengine.caption.schema import Constraint, SchemaGrammar

    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        cat = make_catalog(Path(tmp), args.clips)
        sampling = SamplingParams(fps=2.0, max_frames=8, max_pixels=224 * 224)
        free = load_prompt("caption_v1", sampling)
        con = load_prompt("caption_v1", sampling, constraint=Constraint())
        cap = load_captioner("tiny", device="cpu")
        todo, _ = select_clips(cat, "x", "y", query=None, limit=None, overwrite=False, retry_failed=False)
        prep = Preparer(cap, sampling)
        batches = [prep(todo[i:i + args.batch]) for i in range(0, len(todo), args.batch)]
        print(f"{len(todo)} clips in {len(batches)} batches of {args.batch}; tiny random Qwen2-VL on CPU, "
              f"{torch.get_num_threads()} torch threads")
        t0 = time.perf_counter()
        SchemaGrammar(con.schema, cap.processor.tokenizer, cap.model.config.get_text_config().vocab_size)
        print(f"grammar compile (once per run): {time.perf_counter() - t0:.3f} s")
        cap.grammar(con.schema)  # compiled and cached for the runs below
        per_step(cap, batches, con, free, args.batch)
        end_to_end(cat, cap, con, free, args.batch)


if __name__ == "__main__":
    main()
