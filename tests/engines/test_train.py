"""Training in both modes, resume, export parity and the inputs training must refuse."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from engines.data.dataset import load_dataset, split
from engines.data.synth import SynthOptions, frame_for
from engines.pytorch.models import Architecture
from engines.pytorch.weights import load_torch_models
from engines.runtime.base import pad_to_multiple
from engines.runtime.modelcard import load_model
from engines.runtime.onnxruntime import OnnxRuntimeEngine
from engines.training.export import write_model_folder
from engines.training.fitting import Checkpoints, bce_dice_loss, fresh_models
from engines.training.options import DEFAULTS, TrainedModels, TrainOptions
from engines.training.targets import CamCache
from engines.training.train import main, train_models
from tests.engines.cli import train_args


@pytest.mark.parametrize("mode", ["weak", "supervised"])
def test_two_step_training_writes_a_complete_model(tiny_models, mode):
    bundle = load_model(tiny_models[mode])
    assert bundle.card.mode == mode
    assert bundle.card.training_data_hash
    assert 0 < bundle.card.segment_threshold < 1
    for part in ("detector", "segmenter", "detector_torch", "segmenter_torch"):
        assert bundle.path(part).stat().st_size > 10_000
    if mode == "weak":
        assert any("pseudo-mask rule" in note for note in bundle.card.notes)


@pytest.mark.parametrize("mode", ["weak", "supervised"])
def test_onnx_runtime_matches_torch(tiny_models, mode):
    bundle = load_model(tiny_models[mode])
    engine = OnnxRuntimeEngine(bundle, threads=1)
    detector, segmenter = load_torch_models(bundle.folder, bundle.card)
    options = SynthOptions(height=100, width=130)
    frames = np.stack([frame_for(3, i, options).image for i in range(3)])
    scores = engine.detect(frames)
    probability = engine.segment(frames)
    padded = pad_to_multiple(frames[:, None].astype(np.float32), bundle.card.pad_multiple)
    x = torch.from_numpy(padded)
    with torch.no_grad():
        expected_scores = detector(x).numpy()
        expected_probability = segmenter(x).numpy()[:, 0, :100, :130]
    assert probability.shape == (3, 100, 130)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    np.testing.assert_allclose(probability, expected_probability, atol=1e-4)


def test_onnx_files_carry_the_card(tiny_models):
    import onnx

    bundle = load_model(tiny_models["supervised"])
    meta = {p.key: p.value for p in onnx.load(str(bundle.path("segmenter"))).metadata_props}
    assert meta["artifactd.training_data_hash"] == bundle.card.training_data_hash
    assert float(meta["artifactd.segment_threshold"]) == bundle.card.segment_threshold
    assert json.loads(meta["artifactd.architecture"]) == bundle.card.architecture
    batch_dim = onnx.load(str(bundle.path("detector"))).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # a named, dynamic batch axis


def test_resume_continues_from_the_checkpoint(tiny_dataset, tmp_path):
    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv",
                           tiny_dataset / "masks")
    options = TrainOptions(mode="supervised", detector_steps=2, segmenter_steps=2, batch_size=2,
                           crop=64, checkpoint_every=1, val_fraction=0.34)
    checkpoints = Checkpoints(tmp_path / "ckpt")
    train_models(dataset, options, checkpoints)
    saved = torch.load(checkpoints.path("detector"), weights_only=False)
    assert saved["step"] == 2
    assert sorted(p.name for p in checkpoints.folder.iterdir()) == ["detector.pt", "segmenter.pt"]
    more = TrainOptions(mode="supervised", detector_steps=3, segmenter_steps=3, batch_size=2,
                        crop=64, checkpoint_every=1, val_fraction=0.34)
    train_models(dataset, more, checkpoints)
    assert torch.load(checkpoints.path("detector"), weights_only=False)["step"] == 3


def test_split_is_stratified_and_seeded():
    labels = np.array([0] * 10 + [1] * 10)
    train, val = split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val])) == list(range(20))
    assert labels[val].sum() == 2 and len(val) == 4
    assert np.array_equal(split(labels, 0.2, seed=3)[1], val)


def test_bce_dice_is_low_for_a_perfect_prediction_and_high_for_its_opposite():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:5, 2:5] = 1
    good = bce_dice_loss((target * 2 - 1) * 20, target)
    bad = bce_dice_loss((1 - target * 2) * 20, target)
    assert good.item() < 0.01 and bad.item() > 10


def _copy(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("empty_folder", "frames folder is empty"),
        ("missing_file", "do not exist"),
        ("one_class", "expected both clean and artifact"),
        ("not_an_image", "not a readable TIFF"),
        ("mask_shape", "differs from its frame"),
        ("bad_label", "expected clean or artifact"),
        ("too_few", "expected at least 2 of each"),
        ("mixed_bit_depths", "expected one bit depth"),
        ("mistyped_init", "expected 'default' (the shipped model) or a folder"),
    ],
)
def test_bad_training_input_is_refused_clearly(tiny_dataset, tmp_path, caplog, breakage, message):
    data = _copy(tiny_dataset, tmp_path)
    labels = data / "labels.csv"
    rows = labels.read_text().splitlines()
    if breakage == "empty_folder":
        shutil.rmtree(data / "frames")
        (data / "frames").mkdir()
    elif breakage == "missing_file":
        labels.write_text("\n".join([*rows, "nowhere.tif,clean"]) + "\n")
    elif breakage == "one_class":
        clean = [r.rsplit(",", 1)[0] + ",clean" for r in rows[1:]]
        labels.write_text("\n".join([rows[0], *clean]) + "\n")
    elif breakage == "not_an_image":
        (data / "frames" / rows[1].split(",")[0]).write_text("hello")
    elif breakage == "mask_shape":
        tifffile.imwrite(data / "masks" / rows[1].split(",")[0], np.zeros((5, 5), np.uint16))
    elif breakage == "bad_label":
        labels.write_text("\n".join([*rows, rows[1].rsplit(",", 1)[0] + ",dirty"]) + "\n")
    elif breakage == "too_few":  # one artifact frame: none left to validate on
        first_artifact = next(r for r in rows[1:] if r.endswith(",artifact"))
        labels.write_text("\n".join([rows[0], first_artifact,
                                     *[r for r in rows[1:] if r.endswith(",clean")]]) + "\n")
    elif breakage == "mixed_bit_depths":
        name = rows[1].split(",")[0]
        frame = tifffile.imread(data / "frames" / name)
        tifffile.imwrite(data / "frames" / name, (frame // 256).astype(np.uint8))
    extra = ("--init", "defualt") if breakage == "mistyped_init" else ()
    out = tmp_path / "model"
    assert main(train_args(data, out, mode="supervised", extra=extra)) == 2
    assert message in caplog.text
    assert not out.exists(), "no half-written model may be left behind"


def test_a_replaced_model_stays_whole_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    """--overwrite: the old model folder is swapped out only once the new one is complete, and
    comes back as it was when the new one cannot be renamed in; nothing is left beside it."""
    arch = Architecture(in_channels=1, unshuffle=4, detector_widths=(8, 16), unet_widths=(8, 16))
    detector, segmenter = fresh_models(arch, seed=0)
    out = tmp_path / "model"

    def write(name: str) -> None:
        trained = TrainedModels(detector.eval(), segmenter.eval(), 0.5, 0.5, "supervised", "all",
                                {}, [])
        write_model_folder(out, trained, TrainOptions(arch=arch, name=name), "data", version="0")

    write("old")
    rename = Path.rename

    def staging_cannot_move_in(self: Path, target: Path) -> Path:
        if Path(target) == out and ".old." not in self.name:
            raise OSError("no space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", staging_cannot_move_in)
    with pytest.raises(OSError, match="no space left"):
        write("new")
    monkeypatch.undo()
    assert load_model(out).card.name == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    write("new")
    assert load_model(out).card.name == "new"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["detector.onnx", "segmenter.onnx", "detector.pt", "segmenter.pt", "model.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_weak_mode_can_take_a_detector_and_continue_a_model(tiny_dataset, tiny_models, tmp_path):
    out = tmp_path / "continued"
    extra = ("--detector-from", str(tiny_models["supervised"]), "--init", str(tiny_models["weak"]))
    assert main(train_args(tiny_dataset, out, mode="weak", extra=extra)) == 0
    shared = torch.load(tiny_models["supervised"] / "detector.pt", weights_only=True)
    taken = torch.load(out / "detector.pt", weights_only=True)
    assert all(torch.equal(shared[k], taken[k]) for k in shared)
    notes = load_model(out).card.notes
    assert any("detector taken as is" in n for n in notes)
    assert any("continued from" in n for n in notes)


@pytest.mark.parametrize("mode", ["weak", "supervised"])
def test_a_detector_only_stage_keeps_the_unet(tiny_dataset, tiny_models, tmp_path, mode):
    """--segmenter-steps 0 continues the detector alone: the U-Net is carried over unchanged
    and, in weak mode, no pseudo-masks are made for it."""
    out = tmp_path / "detector-only"
    extra = ("--init", str(tiny_models[mode]), "--segmenter-steps", "0")
    assert main(train_args(tiny_dataset, out, mode=mode, extra=extra)) == 0
    before = torch.load(tiny_models[mode] / "segmenter.pt", weights_only=True)
    after = torch.load(out / "segmenter.pt", weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    detector = torch.load(out / "detector.pt", weights_only=True)
    earlier = torch.load(tiny_models[mode] / "detector.pt", weights_only=True)
    assert any(not torch.equal(earlier[k], detector[k]) for k in earlier), "the detector trains"
    notes = load_model(out).card.notes
    assert "U-Net taken as is (no segmenter steps)" in notes
    assert not any("pseudo-mask rule" in n for n in notes)


@pytest.mark.parametrize(("flag", "value"), [("--segmenter-steps", "-1"),
                                             ("--detector-steps", "-5"), ("--batch-size", "0")])
def test_impossible_step_counts_are_refused_by_name(tiny_dataset, tmp_path, caplog, flag, value):
    out = tmp_path / "model"
    assert main(train_args(tiny_dataset, out, mode="supervised", extra=(flag, value))) == 2
    assert f"{flag} {value}: expected at least" in caplog.text
    assert not out.exists()


def test_the_detector_threshold_is_chosen_for_the_verdict_the_service_gives():
    from engines.training.validation import best_f1_threshold

    scores = np.array([0.9, 0.2, 0.5])
    truth = np.array([1, 1, 0])
    # The detector alone: passing the true 0.2 means passing the false 0.5 too, so the best
    # F1 is 0.8, anywhere in 0.05-0.2: the middle of that run is taken.
    assert best_f1_threshold(scores, truth) == (0.15, 0.8)
    # The segmenter finds the artifact of the frame scored 0.2: a threshold above the false
    # 0.5 and below the true 0.9 then flags exactly the two true frames (0.55-0.85: middle 0.7).
    assert best_f1_threshold(scores, truth, np.array([0, 2, 0])) == (0.7, 1.0)


def test_auto_segments_every_frame_only_where_that_makes_the_verdict_better():
    from engines.training.validation import choose_verdict

    scores = np.array([0.9, 0.2, 0.5])
    truth = np.array([1, 1, 0])
    # The U-Net finds the artifact the detector scored low: every frame is segmented.
    def chosen(found, segment):
        v = choose_verdict(scores, truth, found, segment)
        return v.segment, v.detect_threshold, v.f1

    assert chosen(np.array([0, 2, 0]), "auto") == ("all", 0.7, 1.0)
    # It finds specks in the clean frame as well: the verdict is no better, so flagged only.
    assert chosen(np.array([1, 2, 1]), "auto") == ("flagged", 0.15, 0.8)
    # Asked for, a mode is kept whatever validation says.
    assert chosen(np.array([1, 2, 1]), "all")[0] == "all"


def test_the_verdict_stays_quiet_on_clean_frames_when_asked():
    from engines.training.validation import choose_verdict

    # A clean frame of an unusual plate scores above two of the artifact frames.
    scores = np.array([0.97, 0.9, 0.6, 0.58, 0.62, 0.1, 0.1, 0.1])
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    loose = choose_verdict(scores, truth, np.zeros(8, int), "flagged")
    quiet = choose_verdict(scores, truth, np.zeros(8, int), "flagged", max_false_flag_rate=0.0)
    assert loose.false_flag_rate == 0.25  # best F1 alone flags it to catch the 0.6 and 0.58
    assert quiet.false_flag_rate == 0 and quiet.detect_threshold > 0.62


def test_a_larger_minimum_area_is_chosen_when_specks_flag_clean_frames():
    from engines.training.validation import choose_verdict

    scores = np.array([0.9, 0.2, 0.1, 0.1])
    truth = np.array([1, 1, 0, 0])
    # At 40 px the U-Net finds specks in both clean frames; at 160 px only the real artifact.
    found = {40: np.array([1, 2, 3, 1]), 80: np.array([1, 1, 1, 1]), 160: np.array([1, 1, 0, 0])}
    verdict = choose_verdict(scores, truth, found, "all", max_false_flag_rate=0.0)
    assert (verdict.min_area_px, verdict.f1, verdict.false_flag_rate) == (160, 1.0, 0.0)


def test_the_card_says_which_frames_the_segmenter_runs_on(tiny_models, tiny_dataset, tmp_path):
    assert load_model(tiny_models["supervised"]).card.segment in ("all", "flagged")
    for segment in ("flagged", "all"):
        out = tmp_path / segment
        args = train_args(tiny_dataset, out, mode="supervised", extra=("--segment", segment))
        assert main(args) == 0
        assert load_model(out).card.segment == segment


def test_scorecam_maps_are_kept_for_a_later_run_with_the_same_detector(
        tiny_dataset, tiny_models, tmp_path, monkeypatch):
    """--cam-cache: the second weak run with the same detector and frames reads every map
    back instead of computing it, and trains the same U-Net from them."""
    cache = tmp_path / "cams"
    extra = ("--detector-from", str(tiny_models["supervised"]), "--cam-cache", str(cache),
             "--seed", "7")
    assert main(train_args(tiny_dataset, tmp_path / "first", mode="weak", extra=extra)) == 0
    maps = sorted(cache.glob("*/*.npy"))
    artifact_frames = sum(line.endswith(",artifact")
                          for line in (tiny_dataset / "labels.csv").read_text().splitlines())
    assert len(maps) == artifact_frames
    assert not list(cache.glob("*/*.tmp"))

    def no_scorecam(*args, **kwargs):
        raise AssertionError("ScoreCAM ran although its map was in the cache")

    monkeypatch.setattr("engines.training.targets.scorecam", no_scorecam)
    assert main(train_args(tiny_dataset, tmp_path / "second", mode="weak", extra=extra)) == 0
    first = torch.load(tmp_path / "first" / "segmenter.pt", weights_only=True)
    second = torch.load(tmp_path / "second" / "segmenter.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_cam_cache_is_per_detector_and_makes_damaged_maps_again(tiny_models, tmp_path):
    folder = tiny_models["weak"]
    detectors = {"weak": load_torch_models(folder, load_model(folder).card)[0],
                 "other": load_torch_models(folder, load_model(folder).card)[0]}
    with torch.no_grad():
        next(detectors["other"].parameters()).add_(1e-3)  # another detector, however close
    caches = {mode: CamCache(tmp_path, d, top_k=32) for mode, d in detectors.items()}
    assert caches["weak"].detector_key != caches["other"].detector_key
    image = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    cam = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    caches["weak"].put(image, cam)
    assert np.array_equal(caches["weak"].get(image), cam)
    assert caches["other"].get(image) is None
    assert CamCache(None, detectors["weak"], top_k=32).get(image) is None
    next(tmp_path.glob("*/*.npy")).write_bytes(b"truncated")
    assert caches["weak"].get(image) is None


def test_init_default_fine_tunes_the_shipped_model_with_short_defaults(tiny_dataset, tmp_path):
    """`--init default` is the word the config accepts; fine-tuning defaults are the short ones."""
    from engines.training.options import FINE_TUNE_STEPS
    from engines.training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--frames", "f", "--labels", "l", "--out", "o", "--init", "default"])
    assert args.detector_steps is None and args.segmenter_steps is None  # resolved by --init
    assert FINE_TUNE_STEPS["detector"] < DEFAULTS.detector_steps
    out = tmp_path / "tuned"
    extra = ("--init", "default", "--crop", "128")
    assert main(train_args(tiny_dataset, out, mode="supervised", extra=extra)) == 0
    card = load_model(out).card
    assert any("continued from the networks of default" in n for n in card.notes)
    assert card.familiarity["features"], "the card carries the training frames' appearance"


def test_train_without_torch_names_the_extra_to_install(tmp_path):
    """A plain `pip install artifactd` has no torch: `artifactd train --help` says what to do."""
    blocker = tmp_path / "sitecustomize.py"
    # import torch -> ModuleNotFoundError
    blocker.write_text("import sys\nsys.modules['torch'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path.cwd()}"}
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "train", "--help"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "pip install 'artifactd[train]'" in done.stderr and "'torch'" in done.stderr


def test_thresholds_can_be_chosen_on_another_renderers_frames(tiny_dataset, tmp_path):
    """--val-frames: a domain the model does not train on chooses its verdict."""
    from engines.data.synth import write_dataset

    other = write_dataset(tmp_path / "other", 8, seed=6,
                          options=SynthOptions(height=128, width=128),
                          progress=False, renderer_name="monolayer")
    out = tmp_path / "model"
    extra = ("--val-frames", str(other / "frames"), "--val-labels", str(other / "labels.csv"),
             "--val-masks", str(other / "masks"), "--max-false-flag-rate", "0")
    assert main(train_args(tiny_dataset, out, mode="supervised", extra=extra)) == 0
    card = load_model(out).card
    assert "thresholds chosen on 8 separate validation frames" in card.notes
    assert "val_false_flag_rate" in card.evaluation
    said = ("flagging at most 0% of clean frames" if card.evaluation["val_false_flag_rate"] == 0
            else "no choice flagged at most 0% of the clean validation frames")
    assert any(said in n for n in card.notes), card.notes


def test_the_card_says_when_no_threshold_met_the_false_flag_cap():
    from engines.training.train import verdict_note
    from engines.training.validation import Verdict

    met = Verdict("flagged", 0.8, 40, 0.9, 0.02)
    missed = Verdict("flagged", 0.95, 40, 0.82, 0.091)
    assert "flagging at most 3% of clean frames (flagged 2.0%)" in verdict_note(met, 0.03)
    note = verdict_note(missed, 0.03)
    assert "no choice flagged at most 3%" in note and "flags fewest (9.1%" in note


def test_validation_frames_need_their_labels(tiny_dataset, tmp_path, caplog):
    out = tmp_path / "model"
    extra = ("--val-frames", str(tiny_dataset / "frames"))
    assert main(train_args(tiny_dataset, out, mode="supervised", extra=extra)) == 2
    assert "--val-frames and --val-labels go together" in caplog.text
    assert not out.exists()


REPO = Path(__file__).resolve().parents[2]


def test_one_command_gives_one_model_in_two_processes(tiny_dataset, tmp_path):
    """The same `artifactd train` run in two processes, whose str hashes Python salts
    differently, gives the same weights tensor for tensor and the same card."""
    runs = {}
    for salt in ("1", "2"):
        out = tmp_path / f"model-{salt}"
        argv = [sys.executable, "-m", "daemon.cli", "train",
                "--frames", str(tiny_dataset / "frames"),
                "--labels", str(tiny_dataset / "labels.csv"),
                "--masks", str(tiny_dataset / "masks"),
                "--out", str(out), "--mode", "weak", "--detector-steps", "3",
                "--segmenter-steps", "3", "--batch-size", "2", "--crop", "64",
                "--val-fraction", "0.34", "--seed", "11", "--device", "cpu"]
        env = {**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": str(REPO)}
        runs[out] = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
    for process in runs.values():
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
    first, second = runs
    for part in ("detector.pt", "segmenter.pt"):
        a = torch.load(first / part, weights_only=True)
        b = torch.load(second / part, weights_only=True)
        assert a and list(a) == list(b)
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{part}: {len(different)} tensors differ, first {different[0]}"
    assert (first / "model.json").read_text() == (second / "model.json").read_text()


def test_training_leaves_torchs_global_generator_alone(tiny_dataset, tmp_path):
    """Every draw comes from generators of its own: what ran before cannot change the model,
    and training does not move the generator other code relies on."""
    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv",
                           tiny_dataset / "masks")
    options = TrainOptions(mode="weak", detector_steps=2, segmenter_steps=2, batch_size=2,
                           crop=64, val_fraction=0.34)
    weights = []
    for noise_before in (0, 5):
        torch.manual_seed(123)
        torch.rand(noise_before)  # other code drew from the global generator first
        state = torch.get_rng_state()
        trained = train_models(dataset, options, Checkpoints(tmp_path / f"ckpt-{noise_before}"))
        assert torch.equal(torch.get_rng_state(), state)
        weights.append(trained.segmenter.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_labels_only_fine_tuning_takes_pseudo_masks_from_the_models_own_outlines(
        tiny_dataset, tiny_models, tmp_path):
    """Weak mode from --init: the initial U-Net's outlines (where ScoreCAM points) are the
    pseudo-masks, and clean frames stay empty; a from-scratch weak run uses image evidence."""
    from engines.training.options import Starting
    from engines.training.targets import Outliner, initial_outliner

    options = TrainOptions(init=tiny_models["supervised"])
    _, segmenter = load_torch_models(tiny_models["supervised"],
                                     load_model(tiny_models["supervised"]).card)
    outliner = initial_outliner(Starting.of(options), segmenter)
    card = load_model(tiny_models["supervised"]).card
    assert outliner.threshold == card.segment_threshold
    assert outliner.min_area_px == card.min_area_px
    assert initial_outliner(Starting.of(TrainOptions()), segmenter) is None
    # The outline keeps whole regions of at least the minimum area and nothing smaller.
    always = Outliner(segmenter, threshold=0.0, min_area_px=10)
    image = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv").samples[0].image
    assert always.outline(image, 32, torch.device("cpu")).all()
    never = Outliner(segmenter, threshold=1.1, min_area_px=1)
    assert not never.outline(image, 32, torch.device("cpu")).any()
    out = tmp_path / "tuned"
    extra = ("--init", str(tiny_models["supervised"]), "--crop", "64")
    data = _copy(tiny_dataset, tmp_path)
    shutil.rmtree(data / "masks")
    (data / "masks").mkdir()
    assert main(train_args(data, out, mode="weak", extra=extra)) == 0
    assert any("pseudo-masks: whole regions the initial U-Net outlines" in n
               for n in load_model(out).card.notes)


def test_too_few_clean_frames_keep_the_initial_detector_threshold_as_a_floor():
    """Nine clean frames cannot measure a 3 % false-flag rate: a fine-tune's threshold is not
    put below the initial model's; with 40 clean frames the cap is measurable and no floor."""
    from engines.training.options import Starting
    from engines.training.validation import choose_verdict

    starting = Starting(detect_threshold=0.8, segment_threshold=0.98)
    assert starting.detector_floor(9, 0.03) == 0.8
    assert starting.detector_floor(40, 0.03) == 0.0
    scores = np.array([0.35, 0.4, 0.9, 0.95, 0.1, 0.2, 0.25, 0.1])
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    free = choose_verdict(scores, truth, np.zeros(8, int), "flagged", 0.03)
    floored = choose_verdict(scores, truth, np.zeros(8, int), "flagged", 0.03, floor=0.8)
    assert free.detect_threshold < 0.35 and free.f1 == 1.0
    assert floored.detect_threshold >= 0.8
    # A cap of 0 needs as many clean frames as 3 %; a floor above the grid is not rounded down.
    assert starting.detector_floor(10**6, 0.0) == 0.0 and starting.detector_floor(20, 0.0) == 0.8
    high = choose_verdict(scores, truth, np.zeros(8, int), "flagged", 0.03, floor=0.975)
    assert high.detect_threshold >= 0.975


def test_a_labels_only_fine_tune_keeps_the_unet_and_its_thresholds(tiny_dataset, tiny_models,
                                                                   tmp_path):
    """From labels alone (--init, no masks, no --segmenter-steps) the U-Net and its pixel
    threshold stay as the initial model's; a few validation frames keep its detector
    threshold as the floor. The card says so."""
    data = _copy(tiny_dataset, tmp_path)
    shutil.rmtree(data / "masks")
    (data / "masks").mkdir()
    start = tiny_models["supervised"]
    parser = argparse.ArgumentParser()
    from engines.training.train import add_arguments

    add_arguments(parser)
    args = parser.parse_args(["--frames", str(data / "frames"), "--labels",
                              str(data / "labels.csv"), "--out", str(tmp_path / "tuned"),
                              "--init", str(start), "--mode", "weak", "--detector-steps", "2",
                              "--batch-size", "2", "--val-fraction", "0.34"])
    assert main(args) == 0
    before, after = load_model(start).card, load_model(tmp_path / "tuned").card
    assert after.segment_threshold == before.segment_threshold
    assert after.detect_threshold >= before.detect_threshold
    weights = torch.load(start / "segmenter.pt", weights_only=True)
    kept = torch.load(tmp_path / "tuned" / "segmenter.pt", weights_only=True)
    assert all(torch.equal(weights[k], kept[k]) for k in weights)
    assert "U-Net taken as is (no segmenter steps)" in after.notes
    assert any("kept from the initial model (no validation masks)" in n for n in after.notes)
    assert any("cannot measure a 3% false-flag rate" in n for n in after.notes)
    assert (after.segment, after.min_area_px) == (before.segment, before.min_area_px)


def test_a_time_budget_cuts_the_steps_and_still_writes_the_model(tiny_dataset, tmp_path, caplog,
                                                                  monkeypatch):
    """--minutes: a pace measured on the first steps cuts the rest; the learning rate still
    decays to zero over the steps that are run."""
    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv",
                           tiny_dataset / "masks")
    options = TrainOptions(mode="supervised", detector_steps=2000, segmenter_steps=0,
                           batch_size=2, crop=64, val_fraction=0.34, minutes=0.05)
    rates = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with caplog.at_level("INFO", logger="engines.training.fitting"):
        trained = train_models(dataset, options, Checkpoints(tmp_path / "ckpt"))
    assert trained.detector is not None and trained.validation
    assert 6 <= len(rates) < 2000, "the budget did not cut the steps"
    assert any("planned (--minutes)" in r.getMessage() for r in caplog.records)
    assert rates[0] == pytest.approx(options.learning_rate)
    assert rates[-1] < 0.1 * options.learning_rate  # decayed over the steps run


def test_a_time_budget_of_nothing_is_refused(tiny_dataset, tmp_path):
    from engines.data.dataset import DatasetError

    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv",
                           tiny_dataset / "masks")
    with pytest.raises(DatasetError, match="--minutes 0: expected more than 0"):
        train_models(dataset, TrainOptions(mode="supervised", minutes=0.0),
                     Checkpoints(tmp_path / "ckpt"))


def test_a_fine_tune_with_the_default_steps_keeps_to_its_minutes():
    from engines.training.options import FINE_TUNE_MINUTES
    from engines.training.train import step_minutes

    def args(**given):
        fields = {"minutes": None, "init": None, "detector_steps": None, "segmenter_steps": None}
        return argparse.Namespace(**{**fields, **given})

    assert step_minutes(args(init="default")) == FINE_TUNE_MINUTES
    assert step_minutes(args(init="default", detector_steps=900)) is None  # steps asked for
    assert step_minutes(args()) is None  # training from scratch: no limit
    assert step_minutes(args(minutes=3.0)) == 3.0


def test_the_detector_split_after_any_layer_gives_the_same_logits():
    """features_before + logits_from are logits cut in two, at every place a fine-tune may fix."""
    detector = fresh_models(Architecture(), seed=3)[0].eval()
    frames = torch.rand(2, 1, 128, 192) * 4000
    with torch.no_grad():
        whole = detector.logits(frames)
        for layers in range(1 + len(Architecture().detector_widths)):
            part = detector.features_before(frames, layers)
            assert torch.allclose(detector.logits_from(part, layers), whole, atol=1e-5), layers


def test_the_eight_orientations_are_distinct_and_keep_a_batch_together():
    from engines.training.fixed_layers import ORIENTATIONS, oriented

    frame = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = {(tuple(oriented(frame, k).shape), tuple(oriented(frame, k).flatten().tolist()))
            for k in range(ORIENTATIONS)}
    assert len(seen) == ORIENTATIONS
    assert oriented(torch.zeros(5, 1, 3, 4), 1).shape == (5, 1, 4, 3)


def test_a_fine_tune_with_fixed_layers_trains_only_the_later_ones(tiny_dataset, tiny_models,
                                                                   tmp_path, caplog):
    """--fixed-layers 2: the stem and the first stage are bit for bit those of --init, the rest
    and the head learnt, and the log says what was stored."""
    start = tiny_models["supervised"]
    out = tmp_path / "quick"
    extra = ("--init", str(start), "--fixed-layers", "2", "--detector-steps", "3",
             "--segmenter-steps", "0")
    with caplog.at_level("INFO", logger="engines.training.fixed_layers"):
        assert main(train_args(tiny_dataset, out, mode="supervised", extra=extra)) == 0
    before = torch.load(start / "detector.pt", weights_only=True)
    after = torch.load(out / "detector.pt", weights_only=True)
    weights = [k for k in before if k.endswith("weight")]
    fixed = [k for k in weights if k.startswith(("stem.", "stages.0."))]
    learnt = [k for k in weights if k.startswith(("stages.3.", "head."))]
    assert fixed and learnt
    assert all(torch.equal(before[k], after[k]) for k in fixed)
    assert all(not torch.equal(before[k], after[k]) for k in learnt)
    assert any("first 2 layer(s) kept fixed" in r.getMessage() and "8 orientation(s)"
               in r.getMessage() for r in caplog.records)


def test_stored_features_take_fewer_orientations_when_memory_is_short(tiny_dataset, monkeypatch):
    from engines.training import fixed_layers

    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv")
    detector = fresh_models(Architecture(), seed=3)[0]
    one_frame = 16 * 32 * 32 * 2  # the stem's output of a 128 x 128 frame, float16
    monkeypatch.setattr(fixed_layers, "MEMORY_BUDGET", 12 * one_frame * 3)
    stored = fixed_layers.FixedFeatures(detector, dataset, np.arange(12), 1, 64,
                                        torch.device("cpu"))
    assert stored.orientations == 3
    batch = stored.batch(np.array([0, 5, 5]), np.random.default_rng(0))
    assert batch.shape == (3, 16, 32, 32) and batch.dtype == torch.float32


@pytest.mark.parametrize("value", ["-1", "5"])
def test_fixing_every_layer_or_fewer_than_none_is_refused(tiny_dataset, tmp_path, caplog, value):
    extra = ("--fixed-layers", value)
    assert main(train_args(tiny_dataset, tmp_path / "m", mode="supervised", extra=extra)) == 2
    assert f"--fixed-layers {value}: expected 0 to 4" in caplog.text
    assert not (tmp_path / "m").exists()


def test_fixed_layers_give_a_fine_tune_more_of_its_cheaper_steps(tiny_dataset, tmp_path,
                                                                   monkeypatch):
    from engines.training import train
    from engines.training.options import FINE_TUNE_STEPS, FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS

    asked = []

    def capture(dataset, options, checkpoints, validation=None):
        asked.append(options)
        raise train.DatasetError("stop here")

    monkeypatch.setattr(train, "train_models", capture)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    base = ["--frames", str(tiny_dataset / "frames"), "--labels", str(tiny_dataset / "labels.csv"),
            "--init", "default"]
    for extra in ([], ["--fixed-layers", "2"]):
        assert main(parser.parse_args([*base, "--out", str(tmp_path / str(len(extra))),
                                       *extra])) == 2
    full, quick = asked
    assert (full.fixed_layers, full.detector_steps) == (0, FINE_TUNE_STEPS["detector"])
    assert (quick.fixed_layers, quick.detector_steps) == (2, FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS)


def test_an_interrupted_fine_tune_with_fixed_layers_resumes_to_the_same_weights(
        tiny_dataset, tiny_models, tmp_path, monkeypatch):
    """The stored features are made again on resume, and the orientations drawn continue from
    the checkpoint's generator: stopped after 2 of 4 steps and resumed, the same detector."""
    dataset = load_dataset(tiny_dataset / "frames", tiny_dataset / "labels.csv",
                           tiny_dataset / "masks")
    options = TrainOptions(mode="supervised", detector_steps=4, segmenter_steps=0, batch_size=2,
                           val_fraction=0.34, checkpoint_every=2, fixed_layers=2,
                           init=tiny_models["supervised"])
    straight = train_models(dataset, options, Checkpoints(tmp_path / "a")).detector.state_dict()
    real_step, calls = torch.optim.Adam.step, []

    def stop_at_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", stop_at_the_third)
    checkpoints = Checkpoints(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train_models(dataset, options, checkpoints)
    assert torch.load(checkpoints.path("detector"), weights_only=False)["step"] == 2
    calls.clear()

    def count(self, *args, **kwargs):
        calls.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", count)
    resumed = train_models(dataset, options, checkpoints).detector.state_dict()
    assert len(calls) == 2, "resumed at step 2, not from the start"
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
