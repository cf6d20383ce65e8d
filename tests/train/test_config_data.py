import re

import pytest

from train.config import ConfigError, TrainConfig
from train.data import DataError, build_manifest
from train.presets import load_preset
from train.prompts import PromptError, fill, validation_prompts


def test_seed_tomjerry_preset_is_the_original_table():
    cfg = TrainConfig(**load_preset("seed-tomjerry"))
    assert (cfg.base_model, cfg.height, cfg.width, cfg.frames, cfg.fps) == (
        "Efficient-Large-Model/SANA-Video_2B_480p_diffusers", 224, 224, 81, 16.0)
    assert (cfg.batch_size, cfg.optimizer, cfg.lr, cfg.rank, cfg.alpha, cfg.lora_dropout, cfg.max_steps) == (
        8, "adamw", 2e-4, 16, 32.0, 0.1, 10_000)
    assert cfg.lora_targets == "linear" and cfg.validation_seed == 69420 and cfg.cfg == 4.0


@pytest.mark.parametrize("bad", [dict(frames=80), dict(height=100), dict(rank=0), dict(lora_targets="all"),
                                 dict(optimizer="sgd"), dict(caption_dropout=1.0), dict(prompt_template="nope")])
def test_config_validates(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_config_roundtrip(tmp_path):
    cfg = TrainConfig(rank=8, query="tags LIKE '%chase%'")
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg


def row(cid, start, end, **kw):
    base = dict(clip_id=cid, video_id="v" * 32, video_path="/v.mp4", start_s=start, end_s=end, motion_score=2.0,
                caption=None, tag_list=None)
    return {**base, **kw}


def test_windows_stay_inside_clips_and_short_clips_are_counted():
    cfg = TrainConfig(frames=81, fps=16, holdout=0)
    rows = [row("a", 0.0, 12.0), row("b", 20.0, 23.0), row("c", 30.0, 36.0)]
    m = build_manifest(cfg, rows)
    assert m.too_short == 1 and m.clips == 2
    win = 81 / 16
    for w in m.windows:
        assert w.start_s >= w.clip_start_s - 1e-9
        assert w.start_s + win <= w.clip_end_s + 1e-9
    assert sorted(w.clip_id for w in m.windows) == ["a", "a", "c"]
    assert "1 clips shorter than one window" in m.summary()


def test_empty_and_all_short_selections_are_errors():
    cfg = TrainConfig(query="tags LIKE '%none%'")
    with pytest.raises(DataError, match="matched no clips"):
        build_manifest(cfg, [])
    with pytest.raises(DataError, match="long enough"):
        build_manifest(cfg, [row("a", 0, 2.0)])


def test_holdout_takes_whole_clips():
    cfg = TrainConfig(frames=9, fps=16, holdout=2)
    m = build_manifest(cfg, [row(c, 0.0, 2.0) for c in "abcdef"])
    held = {w.clip_id for w in m.windows if w.role == "holdout"}
    trained = {w.clip_id for w in m.windows if w.role == "train"}
    assert held and not (held & trained)


def test_templates_fill_from_catalog_columns():
    r = row("a", 0, 6, caption="A cat runs.", tag_list=["chase", "night"], action="chase")
    assert fill("{class_prompt} {caption}", r, "CLS") == "CLS A cat runs."
    assert fill("{class_prompt} {tag_tokens}", r, "CLS") == "CLS [chase] [night]"
    assert fill("{action}: {tags}", r, "CLS") == "chase: chase, night"
    assert fill("{class_prompt}", r, "CLS", motion_score=True, motion_scale=5) == "CLS motion score: 10."
    with pytest.raises(PromptError, match="no caption"):
        fill("{caption}", row("b", 0, 6), "CLS")
    with pytest.raises(PromptError, match="unknown template field"):
        fill("{nope}", r, "CLS")
    cfg = TrainConfig(prompt_template="caption", frames=9)
    with pytest.raises(DataError, match="cannot fill"):
        build_manifest(cfg, [row("b", 0, 6)])


def test_default_validation_prompts_are_the_original_five():
    vps = validation_prompts(None)
    assert len(vps) == 5
    assert vps[3].prompt.endswith("tom is eating a pizza.")
    assert vps[0].summary == "class baseline"


def test_validation_prompts_in_toml_and_jsonl_with_per_prompt_settings(tmp_path):
    toml = tmp_path / "v.toml"
    toml.write_text('[[prompt]]\nsummary = "night"\nprompt = "a cat  at night"\nseed = 32420\nsize = "288x160"\n'
                    'frames = 33\ncfg = 5\n\n[[prompt]]\nprompt = "a mouse"\n')
    a, b = validation_prompts(str(toml))
    assert (a.summary, a.prompt, a.seed, a.width, a.height, a.frames, a.cfg) == (
        "night", "a cat at night", 32420, 288, 160, 33, 5.0)
    cfg = TrainConfig()
    assert b.settings(cfg) == {"seed": 69420, "width": 224, "height": 224, "frames": 81, "cfg": 4.0}
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text('{"prompt": "a mouse", "seed": 1}\n\n{"summary": "s", "prompt": "a cat", "size": "64x96"}\n')
    c, d = validation_prompts(str(jsonl))
    assert (c.prompt, c.seed, d.summary, d.width, d.height) == ("a mouse", 1, "s", 64, 96)
    # the shipped TOML is the original experiment's prompts with its two seeds
    from dataengine.assets import asset

    txt = validation_prompts(None)
    orig = validation_prompts(str(asset("prompts", "validation_tomjerry.toml")))
    assert [(p.summary, p.prompt) for p in orig] == [(p.summary, p.prompt) for p in txt]
    assert [p.seed for p in orig] == [69420, 32420, 32420, 32420, 32420]


@pytest.mark.parametrize("suffix,text,message", [
    (".toml", '[[prompt]]\nsummary = "x"\n', "needs prompt"),
    (".toml", '[[prompt]]\nprompt = "x"\nsize = "224x100"\n', "size must be WIDTHxHEIGHT in multiples of 32"),
    (".toml", '[[prompt]]\nprompt = "x"\nframes = 80\n', "frames must be 1 + 4k"),
    (".toml", '[[prompt]]\nprompt = "x"\nseed = "1"\n', "seed must be an integer"),
    (".toml", '[[prompt]]\nprompt = "x"\nsteps = 3\n', "unknown key 'steps'"),
    (".toml", 'prompt = "x"\n', "write each prompt as a [[prompt]] table"),
    (".toml", '[[prompt]\n', "not valid TOML"),
    (".jsonl", '{"prompt": "x"}\n{"prompt": \n', "line 2: not valid JSON"),
    (".jsonl", '["x"]\n', "line 1: expected a table"),
    (".jsonl", '{"prompt": "x", "cfg": true}\n', "cfg must be a number"),
    (".jsonl", '\n', "no prompts in"),
])
def test_bad_validation_prompt_files_name_the_entry(tmp_path, suffix, text, message):
    f = tmp_path / f"v{suffix}"
    f.write_text(text)
    with pytest.raises(PromptError, match=re.escape(message)):
        validation_prompts(str(f))


def test_a_bad_prompts_file_fails_the_dry_run_before_anything_loads(tmp_path, train_catalog):
    from helpers import run_train

    f = tmp_path / "v.toml"
    f.write_text('[[prompt]]\nprompt = "x"\nframes = 80\n')
    r = run_train("--query", "1=1", "--preset", "tiny", "--catalog", str(train_catalog), "--validation-prompts",
                  str(f), "--dry-run", check=False)
    assert r.returncode == 1 and "frames must be 1 + 4k" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("field", ["lr", "fps", "alpha", "cfg", "flow_shift", "motion_scale", "query_timeout"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_numbers_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')} must be a finite number"):
        TrainConfig(**{field: value})
