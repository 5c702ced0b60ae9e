"""hair_jax.experiments.ablation: arms, measures, tables, and a resumable sweep.

Compiling dominates on CPU, so the sweep trains only the smallest
Restormer for 2 steps; the Res-HAIR measures (GIV swap, separation,
entropy) run on an untrained tiny Res-HAIR.
"""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from hair_jax import train as hair_train
from hair_jax.data import builders, synthetic
from hair_jax.data.pipeline import TestImage as Pair  # not collected as a test class
from hair_jax.evaluation import giv, metrics
from hair_jax.experiments import ablation
from hair_jax.nn import models
from hair_jax.train.config import model_config

train_helpers.use_compilation_cache()

TINY = ablation.Preset(
    name="test",
    dim=8,
    num_blocks=(1, 1, 1, 1),
    num_refinement_blocks=1,
    heads=(1, 2, 4, 8),
    dac_groups=12,  # divides the DAC's int(1.5 * 8) = 12 channels
    patch_size=32,
    batch_size=2,
    num_steps=2,
    warmup_steps=1,
    learning_rate=1e-3,
    eval_every=2,
    curve_images=2,
    max_images=2,
    runs=(("3d", "restormer", (0, 1)),),
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
    wide_dim, wide_params, hair_params = ablation.matched_width(TINY)
    assert wide_dim % 2 == 0 and wide_dim > TINY.dim
    assert hair_params == ablation.param_count(ablation.arm_model(TINY, "res_hair"))
    for other in (wide_dim - 2, wide_dim + 2):  # no even neighbour is closer
        n = ablation.param_count(ablation.arm_model(TINY, "restormer_wide", other))
        assert abs(wide_params - hair_params) <= abs(n - hair_params)
    for arm in ablation.ARMS:
        cfg = ablation.arm_model(TINY, arm, wide_dim)
        config = ablation.run_config(TINY, "5d", cfg, seed=3, data_dir="unused")
        assert model_config(config) == cfg  # what training will build
        assert config.train.seed == 3 and config.data.synthetic_five_task
    one_box = ablation.arm_model(TINY, "res_hair_1box")
    assert one_box == dataclasses.replace(ablation.arm_model(TINY, "res_hair"), num_box=(1,) * 5)
    assert ablation.arm_model(TINY, "restormer").arch == "restormer"
    with pytest.raises(ValueError, match="unknown arm 'hair'"):
        ablation.arm_model(TINY, "hair")


def _record(arm, seed, average, drop=None):
    final = {"psnr": {"a": average - 1, "b": average + 1}, "average_psnr": average}
    if drop is not None:
        final.update(separation={"type_accuracy": 0.5, "chance": 1 / 3}, entropy=0.9)
    return {
        "setting": "3d",
        "arm": arm,
        "seed": seed,
        "params": 10 if arm == "restormer" else 20,
        "timing": {"steps": 4, "seconds": 2.0},
        "final": final,
        "giv_swap": None if drop is None else {s: {"drop": drop} for s in ("a", "b")},
    }


def test_table_arithmetic_mean_std_and_paired_difference():
    records = [_record("restormer", s, a) for s, a in enumerate((10.0, 11.0, 12.0))]
    records += [_record("res_hair", s, a, drop=s) for s, a in enumerate((10.5, 11.0, 13.0))]
    table = ablation.summarize(records)["settings"]["3d"]
    assert table["restormer"]["psnr"]["average"] == {"mean": 11.0, "std": 1.0, "n": 3}
    assert table["restormer"]["psnr"]["a"]["mean"] == 10.0
    # paired: 0.5, 0.0, 1.0 -> mean 0.5, sample std 0.5
    diff = table["res_hair"]["paired_difference"]["average"]
    assert diff["mean"] == pytest.approx(0.5) and diff["std"] == pytest.approx(0.5)
    assert table["res_hair"]["giv_swap_drop"]["a"] == {"mean": 1.0, "std": 1.0, "n": 3}
    assert (
        table["res_hair"]["seconds_per_step"] == 0.5
        and "paired_difference" not in table["restormer"]
    )
    text = ablation.markdown({"settings": {"3d": table}})
    assert (
        "| res_hair | 3 | 20 | 0.500 | 10.50 ± 1.32 | 12.50 ± 1.32 | 11.50 ± 1.32 | +0.50 ± 0.50 |"
        in text
    )
    assert "| res_hair | +1.00 ± 1.00 | +1.00 ± 1.00 | 50.0% ± 0.0% | 0.90 ± 0.00 |" in text
    one = ablation.summarize([_record("restormer", 0, 10.0)])["settings"]["3d"]["restormer"]
    assert one["psnr"]["average"]["std"] is None


def _fake_sets():
    rng = np.random.default_rng(0)
    sets = {}
    for task in ("denoise_15", "derain", "dehaze"):
        images = [rng.random((2, 32, 32, 3), np.float32) for _ in range(2)]
        sets[task] = [Pair(f"{task}{i}", task, d, c) for i, (d, c) in enumerate(images)]
    return sets


def test_giv_swap_feeds_another_degradations_giv():
    sets = _fake_sets()
    pairs = ablation.swap_pairs(sets)
    assert pairs == [
        ("denoise_15", 0, "derain", 0),
        ("denoise_15", 1, "derain", 1),
        ("derain", 0, "dehaze", 0),
        ("derain", 1, "dehaze", 1),
        ("dehaze", 0, "denoise_15", 0),
        ("dehaze", 1, "denoise_15", 1),
    ]
    model = models.build_model(ablation.base_model(TINY))
    predictor = ablation._predictor(model)
    swap = ablation.giv_swap(predictor, sets)
    for name, j, donor, k in pairs[::3]:  # eager model calls are slow: one image of two sets
        x, clean = (jnp.asarray(a[None]) for a in (sets[name][j].degraded, sets[name][j].clean))
        donor_giv = model.giv(jnp.asarray(sets[donor][k].degraded[None]))
        swapped = jnp.clip(model(x, giv=donor_giv), 0, 1)
        own = jnp.clip(model(x), 0, 1)
        assert swap[name]["images"][j] == pytest.approx(
            float(metrics.psnr(swapped, clean)[0]), abs=1e-4
        )
        assert swap[name]["own_images"][j] == pytest.approx(
            float(metrics.psnr(own, clean)[0]), abs=1e-4
        )
    assert swap["derain"]["donor"] == "dehaze"
    assert swap["derain"]["drop"] == pytest.approx(
        swap["derain"]["own"] - swap["derain"]["swapped"]
    )
    # GIV measures of the same images: separation of giv.py, entropy of the HSN softmaxes.
    probes = giv.probes_from_test_sets(sets)
    measures = ablation.giv_measures(predictor, probes, batch_size=4)
    givs = model.giv(jnp.asarray(np.stack([p.image for p in probes])))
    expected = giv.selector_entropy(jax_tree_numpy(model.selectors(givs)))
    assert measures["entropy"] == pytest.approx(expected, abs=1e-5)
    assert measures["separation"]["num_images"] == 6 and measures["separation"]["chance"] == 1 / 3
    with pytest.raises(ValueError, match="no test set of another degradation than 'derain'"):
        ablation.swap_pairs({"derain": sets["derain"]})


def jax_tree_numpy(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def test_sweep_resumes_after_a_kill_and_never_retrains(tmp_path, data_dir, monkeypatch):
    out = str(tmp_path / "study")

    def kill_after_first_run(line):
        if ": done," in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ablation.sweep(TINY, out, data_dir=data_dir, log=kill_after_first_run)
    first = os.path.join(out, "runs", "3d", "restormer", "seed0")
    second = os.path.join(out, "runs", "3d", "restormer", "seed1")
    assert os.path.exists(os.path.join(first, "result.json"))
    assert not os.path.exists(os.path.join(second, "result.json"))
    with open(os.path.join(first, "result.json")) as f:
        before = f.read()

    trained = []
    real = hair_train.train_and_evaluate
    monkeypatch.setattr(
        hair_train, "train_and_evaluate", lambda c, w, **k: trained.append(w) or real(c, w, **k)
    )
    lines = []
    summary = ablation.sweep(TINY, out, data_dir=data_dir, log=lines.append)
    assert trained == [second]
    assert lines[0] == "[1/2] 3d restormer seed 0: done before, skipped"
    with open(os.path.join(first, "result.json")) as f:
        assert f.read() == before
    records = []
    for workdir in (first, second):
        with open(os.path.join(workdir, "result.json")) as f:
            records.append(json.load(f))
        assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]  # pruned
    assert [p["step"] for p in records[1]["curve"]] == [0, 2]
    assert records[1]["final"]["psnr"].keys() == {
        f"synthetic_{t}" for t in ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze")
    }
    stats = summary["settings"]["3d"]["restormer"]["psnr"]["average"]
    averages = [r["final"]["average_psnr"] for r in records]
    assert stats["mean"] == pytest.approx(np.mean(averages))
    assert stats["std"] == pytest.approx(np.std(averages, ddof=1))
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert os.path.getsize(os.path.join(out, "curves_3d.png")) > 0
    with open(os.path.join(out, "results.md")) as f:
        assert "| restormer | 2 |" in f.read()

    # One run again on its own, in a fresh --out: the same numbers.
    alone = ablation.sweep(
        TINY, str(tmp_path / "alone"), data_dir=data_dir, only=[("3d", "restormer", 1)]
    )
    with open(
        os.path.join(tmp_path, "alone", "runs", "3d", "restormer", "seed1", "result.json")
    ) as f:
        again = json.load(f)
    assert again["final"] == records[1]["final"] and again["curve"] == records[1]["curve"]
    assert again["giv_swap"] == records[1]["giv_swap"]
    assert alone["settings"]["3d"]["restormer"]["psnr"]["average"]["n"] == 1


@pytest.mark.parametrize(
    "run, message",
    [
        ("3d/restormer", "expected SETTING/ARM/SEED, e.g. 3d/res_hair/1"),
        ("3d/res_hair/7", "3d/res_hair/7 is not a run of preset 'cpu'"),
    ],
)
def test_bad_run_is_one_line(tmp_path, capsys, run, message):
    with pytest.raises(SystemExit) as e:
        ablation.main(["--out", str(tmp_path / "study"), "--run", run])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        ablation.main(["--out", str(blocker / "study")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a file; choose another --out" in err
