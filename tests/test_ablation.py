"""hair_jax.experiments: arms, measures, tables, records and a resumable sweep.

Compiling dominates on CPU, so the sweep trains the smallest Restormer and
one selecting Res-HAIR arm for 2 steps each; the GIV swap is checked on an
untrained small Res-HAIR.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import data_helpers
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from hair_jax import inference
from hair_jax import train as hair_train
from hair_jax.commands import ablation as ablation_command
from hair_jax.data import builders, synthetic
from hair_jax.evaluation import evaluators, giv, selection
from hair_jax.experiments import ablation, arms, tables
from hair_jax.nn import models
from hair_jax.train.config import model_config, objective

train_helpers.use_compilation_cache()

TINY = arms.Preset(
    name="test",
    dim=8,
    num_blocks=(1, 1, 1, 1),
    num_refinement_blocks=1,
    heads=(1, 2, 4, 8),
    dac_groups=4,  # 3 of the DAC's int(1.5 * 8) = 12 channels per group: 32 px suffice
    patch_size=32,
    batch_size=2,
    num_steps=2,
    warmup_steps=1,
    learning_rate=1e-3,
    eval_every=2,
    curve_images=2,
    max_images=2,
    runs=(("3d", "restormer", (0, 1)), ("3d", "ce_router_routing", (0,))),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tfds"))
    synthetic.ensure_built(out, large=True)
    return out


def test_synthetic_large_holds_every_photo_and_24_test_images_per_set(data_dir):
    assert builders.splits(data_dir, "synthetic_large_clean") == {"train": 15, "test": 24}
    assert builders.splits(data_dir, "synthetic_large") == {
        f"{split}_{task}": 60 if split == "train" else 24
        for task in synthetic.PAIRED_TASKS
        for split in ("train", "test")
    }
    test = builders.data_source(data_dir, "synthetic_large", "test_dehaze")
    names = [test[i]["name"].decode() for i in range(len(test))]
    photos = {n.rsplit("_c", 1)[0] for n in names}
    assert photos == set(synthetic.LARGE_TEST_IMAGES)
    assert photos.isdisjoint(synthetic.LARGE_TRAIN_IMAGES)
    assert len(set(names)) == 24 and test[0]["clean"].shape == (128, 128, 3)
    assert set(synthetic.PHOTO_SOURCES) == {
        *synthetic.LARGE_TRAIN_IMAGES,
        *synthetic.LARGE_TEST_IMAGES,
    }


def test_arms_are_configs_of_the_training_code():
    wide_dim, wide_params, hair_params = arms.matched_width(TINY)
    assert wide_dim % 2 == 0 and wide_dim > TINY.dim
    assert hair_params == arms.param_count(arms.arm_model(TINY, "res_hair"))
    for other in (wide_dim - 2, wide_dim + 2):  # no even neighbour is closer
        n = arms.param_count(dataclasses.replace(arms.arm_model(TINY, "restormer"), dim=other))
        assert abs(wide_params - hair_params) <= abs(n - hair_params)
    for name, arm in arms.ARMS.items():
        cfg = arms.arm_model(TINY, name, wide_dim)
        config = arms.run_config(TINY, "5d", name, seed=3, data_dir="unused", wide_dim=wide_dim)
        assert model_config(config) == cfg  # what training will build: every field
        assert dataclasses.asdict(objective(config)).items() >= dict(arm.hair).items()
        assert config.train.seed == 3 and config.data.synthetic_five_task
    one_box = arms.arm_model(TINY, "res_hair_1box")
    assert one_box == dataclasses.replace(arms.arm_model(TINY, "res_hair"), num_box=(1,) * 5)
    assert arms.arm_model(TINY, "restormer_wide", wide_dim).dim == wide_dim
    assert arms.arm_model(TINY, "ce_router").router_temperature == 0.5
    with pytest.raises(ValueError, match="unknown arm 'hair'"):
        arms.arm_model(TINY, "hair")
    # Every preset's runs name known arms, and its HAIR models see the image at its patch.
    for preset in arms.PRESETS.values():
        for _, arm, _ in preset.run_list():
            cfg = arms.arm_model(preset, arm, wide_dim=preset.dim * 2)
            assert cfg.arch != "res_hair" or models.min_size(cfg) <= preset.patch_size


def _record(arm, seed, average, drop=None):
    final = {"psnr": {"a": average - 1, "b": average + 1}, "average_psnr": average}
    if drop is not None:
        final.update(
            separation={"type_accuracy": 0.5, "chance": 1 / 3},
            entropy=0.7,
            type_mi=0.3,
            logit_spread=1.0,
            box_similarity=0.1,
            uniform_drop={"a": 0.2, "b": 0.2, "average": 0.2},
        )
    return {
        "setting": "3d",
        "arm": arm,
        "seed": seed,
        "params": 10 if arm == "restormer" else 20,
        "machine": {"cpu": "AMD EPYC"},
        "timing": {"steps": 4, "seconds": 2.0},
        "final": final,
        "giv_swap": None if drop is None else {s: {"drop": drop} for s in ("a", "b")},
    }


def test_table_arithmetic_mean_std_paired_difference_and_selection():
    records = [_record("restormer", s, a) for s, a in enumerate((10.0, 11.0, 12.0))]
    records += [_record("ce_router", s, a, drop=s) for s, a in enumerate((10.5, 11.0, 13.0))]
    table = tables.summarize(records)["settings"]["3d"]
    assert table["restormer"]["psnr"]["average"] == {"mean": 11.0, "std": 1.0, "n": 3}
    assert table["restormer"]["psnr"]["a"]["mean"] == 10.0
    # paired: 0.5, 0.0, 1.0 -> mean 0.5, sample std 0.5
    diff = table["ce_router"]["paired_difference"]["restormer"]["average"]
    assert diff["mean"] == pytest.approx(0.5) and diff["std"] == pytest.approx(0.5)
    assert table["ce_router"]["giv_swap_drop"]["a"] == {"mean": 1.0, "std": 1.0, "n": 3}
    sel = table["ce_router"]["selection"]
    assert sel["swap_drop"] == {"mean": 1.0, "std": 1.0, "n": 3}
    assert sel["uniform_drop"]["mean"] == pytest.approx(0.2)
    assert table["ce_router"]["selects"]  # entropy 0.7, MI 0.3, swap 1.0, uniform 0.2
    assert table["ce_router"]["seconds_per_step"] == 0.5
    assert table["restormer"]["paired_difference"] == {} and "selection" not in table["restormer"]
    text = tables.markdown({"settings": {"3d": table}})
    assert (
        "| ce_router | 3 | 20 | 0.500 | 10.50 ± 1.32 | 12.50 ± 1.32 | 11.50 ± 1.32 | "
        "+0.50 ± 0.50 |  |  |" in text
    )
    assert (
        "| ce_router | yes | 0.700 ± 0.000 | 0.300 ± 0.000 | +1.000 ± 1.000 | +0.200 ± 0.000 |"
        in text
    )
    weak = [_record("res_hair", 0, 10.0, drop=0.0)]
    assert not tables.summarize(weak)["settings"]["3d"]["res_hair"]["selects"]
    one = tables.summarize([_record("restormer", 0, 10.0)])["settings"]["3d"]["restormer"]
    assert one["psnr"]["average"]["std"] is None


def test_the_giv_evaluator_is_the_selection_modules():
    sets = data_helpers.fake_test_sets(32)
    model = models.build_model(arms.base_model(TINY))
    probes = giv.probes_from_test_sets(sets)
    measures = evaluators.Giv(probes).run(inference.Predictor(model))
    selectors = model.selectors(model.giv(jnp.asarray(np.stack([p.image for p in probes]))))
    assert measures["entropy"] == pytest.approx(
        float(selection.normalised_entropy(selectors)), abs=1e-5
    )
    assert measures["type_mi"] == pytest.approx(
        float(selection.type_information(selectors, jnp.array([0, 0, 1, 1, 2, 2]))), abs=1e-5
    )
    assert measures["separation"]["num_images"] == 6 and measures["separation"]["chance"] == 1 / 3


def test_sweep_records_each_run_resumes_after_a_kill_and_never_retrains(
    tmp_path, data_dir, monkeypatch
):
    out, records = str(tmp_path / "study"), str(tmp_path / "records")

    def kill_after_first_run(line):
        if ": done," in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ablation.sweep(TINY, out, records=records, data_dir=data_dir, log=kill_after_first_run)
    first = ablation.record_path(records, "test", "3d", "restormer", 0)
    assert os.path.exists(first)
    assert os.listdir(os.path.join(records, "test", "3d")) == ["restormer"]
    with open(first) as f:
        before = f.read()

    trained = []
    real = hair_train.train_and_evaluate
    monkeypatch.setattr(
        hair_train, "train_and_evaluate", lambda c, w, **k: trained.append(w) or real(c, w, **k)
    )
    # The workdirs are gone (another machine): the records are what counts.
    shutil.rmtree(out)
    lines = []
    summary = ablation.sweep(TINY, out, records=records, data_dir=data_dir, log=lines.append)
    assert [os.path.relpath(w, out) for w in trained] == [
        "runs/3d/restormer/seed1",
        "runs/3d/ce_router_routing/seed0",
    ]
    assert lines[0] == "[1/3] 3d restormer seed 0: recorded, skipped"
    with open(first) as f:
        assert f.read() == before
    found = ablation.load_records(records, "test")
    assert [(r["arm"], r["seed"]) for r in found] == [
        ("ce_router_routing", 0),
        ("restormer", 0),
        ("restormer", 1),
    ]
    hair, _, second = found
    workdir = os.path.join(out, "runs", "3d", "restormer", "seed1")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]  # pruned
    with open(os.path.join(workdir, "result.json")) as f:
        assert json.load(f) == second
    assert [p["step"] for p in second["curve"]] == [0, 2]
    assert second["final"]["psnr"].keys() == {
        f"synthetic_{t}" for t in ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze")
    }
    assert second["machine"]["cores"] == os.cpu_count() and second["giv_swap"] is None
    # The HAIR arm's record has every selection measure, at every point.
    assert hair["hair"] == {"giv_loss_weight": 0.1, "routing_loss_weight": 0.05}
    for point in [*hair["curve"], hair["final"]]:
        assert {"entropy", "type_mi", "logit_spread", "separation"} <= set(point)
    assert set(hair["final"]["uniform_drop"]) == {*second["final"]["psnr"], "average"}
    assert -1 <= hair["final"]["box_similarity"] <= 1 and hair["model"]["giv_classes"] == 5
    stats = summary["settings"]["3d"]["restormer"]["psnr"]["average"]
    averages = [r["final"]["average_psnr"] for r in found[1:]]
    assert stats["mean"] == pytest.approx(np.mean(averages))
    assert stats["std"] == pytest.approx(np.std(averages, ddof=1))
    folder = os.path.join(records, "test")
    with open(os.path.join(folder, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert os.path.getsize(os.path.join(folder, "curves_3d.png")) > 0
    with open(os.path.join(folder, "results.md")) as f:
        text = f.read()
    assert "| restormer | 2 |" in text and "| ce_router_routing | no |" in text
    # --summary alone rebuilds the same tables from the records, also into a doc's block.
    os.remove(os.path.join(folder, "results.md"))
    doc = tmp_path / "results.md"
    doc.write_text("# Study\n\n<!-- study:test -->\nold\n<!-- /study:test -->\n\nAfter.\n")
    assert ablation.summarize(TINY, records, doc=str(doc), log=lambda _: None) == summary
    with open(os.path.join(folder, "results.md")) as f:
        assert f.read() == text
    assert (
        doc.read_text() == f"# Study\n\n<!-- study:test -->\n{text}<!-- /study:test -->\n\nAfter.\n"
    )

    # One run again on its own, in fresh folders: the same numbers.
    fresh = str(tmp_path / "alone-records")
    alone = ablation.sweep(
        TINY,
        str(tmp_path / "alone"),
        records=fresh,
        data_dir=data_dir,
        only=[("3d", "ce_router_routing", 0)],
    )
    with open(ablation.record_path(fresh, "test", "3d", "ce_router_routing", 0)) as f:
        again = json.load(f)
    for key in ("final", "curve", "giv_swap"):
        assert again[key] == hair[key], key
    assert alone["settings"]["3d"]["ce_router_routing"]["psnr"]["average"]["n"] == 1


@pytest.mark.parametrize(
    "run, message",
    [
        ("3d/restormer", "expected SETTING/ARM/SEED, e.g. 3d/res_hair/1"),
        ("3d/res_hair/7", "3d/res_hair/7 is not a run of preset 'cpu'"),
    ],
)
def test_bad_run_is_one_line(tmp_path, capsys, run, message):
    with pytest.raises(SystemExit) as e:
        ablation_command.main(["--out", str(tmp_path / "study"), "--run", run])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        ablation_command.main(["--out", str(blocker / "study")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a file; choose another --out" in err


def test_the_study_runs_from_any_directory(tmp_path):
    """Installed, the package holds what the study needs: no configs/ on the path."""
    env = dict(train_helpers.subprocess_env())
    env.pop("PYTHONPATH")  # the editable install alone, as a user's shell has it
    proc = subprocess.run(
        [sys.executable, "-m", "hair_jax.experiments.ablation", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m hair_jax.experiments.ablation")
    assert "--preset {cpu,gpu}" in proc.stdout


def test_a_stopped_run_is_not_recorded_and_its_time_adds_up(tmp_path, data_dir, monkeypatch):
    """SIGTERM ends training early (as max_steps_per_run does): no record, then a resume finishes it."""
    out, records = str(tmp_path / "study"), str(tmp_path / "records")
    only = [("3d", "restormer", 0)]
    real = arms.run_config

    def one_step_per_call(*args):
        config = real(*args)
        config.train.max_steps_per_run = 1
        return config

    monkeypatch.setattr(arms, "run_config", one_step_per_call)
    with pytest.raises(ablation.Stopped, match=r"seed0 stopped at step 1 of 2; run the same"):
        ablation.sweep(TINY, out, records=records, data_dir=data_dir, only=only)
    workdir = os.path.join(out, "runs", "3d", "restormer", "seed0")
    assert not os.path.exists(ablation.record_path(records, "test", "3d", "restormer", 0))
    assert not os.path.exists(os.path.join(workdir, "curve"))  # nothing evaluated
    with open(os.path.join(workdir, "timing.json")) as f:
        first = json.load(f)
    assert first["steps"] == 1
    ablation.sweep(TINY, out, records=records, data_dir=data_dir, only=only)
    with open(ablation.record_path(records, "test", "3d", "restormer", 0)) as f:
        timing = json.load(f)["timing"]
    assert timing["steps"] == 2 and timing["seconds"] > first["seconds"]
