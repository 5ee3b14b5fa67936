import functools

import pytest
import torch
from conftest import flip_a_byte_of, torch_threads

from diffcourse.data import three_blobs
from diffcourse.models import MLPDenoiser
from diffcourse.schedules import cosine_schedule
from diffcourse.train import train_classifier, train_denoiser


def _model(num_classes=0):
    torch.manual_seed(0)
    return MLPDenoiser(dim=2, T=50, hidden=32, depth=2, num_classes=num_classes)


def test_loss_falls_and_is_seeded():
    s = cosine_schedule(50)
    a = train_denoiser(_model(), three_blobs(), s, steps=300, batch_size=256, progress=False)
    b = train_denoiser(_model(), three_blobs(), s, steps=300, batch_size=256, progress=False)
    assert a == b
    first, last = sum(a[:30]) / 30, sum(a[-30:]) / 30
    assert last < 0.8 * first, (first, last)


def test_tensor_data_and_condition_dropout():
    s = cosine_schedule(50)
    x, y = three_blobs().sample(500, generator=torch.Generator().manual_seed(0))
    m = _model(num_classes=3)
    losses = train_denoiser(m, (x, y), s, steps=20, batch_size=64, p_uncond=0.2, progress=False)
    assert len(losses) == 20 and all(v == v for v in losses)
    train_denoiser(_model(), x, s, steps=5, batch_size=16, progress=False)


def test_bad_input():
    s = cosine_schedule(50)
    with pytest.raises(ValueError, match="steps"):
        train_denoiser(_model(), three_blobs(), s, steps=0)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(3), three_blobs(), s, steps=1, p_uncond=1.5)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(), three_blobs(), s, steps=1, p_uncond=0.1)
    with pytest.raises(ValueError, match="^schedule has T="):
        train_denoiser(_model(), three_blobs(), cosine_schedule(40), steps=1)
    with pytest.raises(ValueError, match="conditional"):
        train_denoiser(_model(3), torch.randn(10, 2), s, steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_denoiser(_model(), three_blobs(), s, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="batch_size 32 is larger than the data set"):
        train_denoiser(_model(), torch.randn(10, 2), s, steps=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="^data is empty"):
        train_denoiser(_model(), torch.empty(0, 2), s, steps=1, progress=False)


def test_classifier_learns_separated_blobs():
    from diffcourse.models import MLPClassifier
    from diffcourse.train import train_classifier

    s = cosine_schedule(50)
    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=32, depth=2)
    mix = three_blobs(radius=3.0, std=0.3)
    losses = train_classifier(clf, mix, s, steps=200, batch_size=256, lr=3e-3, progress=False)
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    x, y = mix.sample(500, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acc = (clf(x, torch.zeros(500, dtype=torch.long)).argmax(1) == y).float().mean().item()
    assert acc > 0.95
    with pytest.raises(ValueError, match="labelled"):
        train_classifier(clf, torch.randn(10, 2), s, steps=1, batch_size=4, progress=False)


def test_condition_dropout_default_trains_the_null_row():
    s = cosine_schedule(50)
    for p_uncond, should_move in ((None, True), (0.0, False)):
        torch.manual_seed(0)
        m = _model(num_classes=3)
        before = m.label_emb.weight[3].clone()
        train_denoiser(
            m, three_blobs(), s, steps=20, batch_size=64, p_uncond=p_uncond, progress=False
        )
        moved = not torch.equal(before, m.label_emb.weight[3])
        assert moved == should_move, p_uncond
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(
            _model(num_classes=3), three_blobs(), s, steps=1, p_uncond=1.5, progress=False
        )
    with pytest.raises(TypeError, match="p_uncond"):  # a bool is not a probability
        train_denoiser(
            _model(num_classes=3), three_blobs(), s, steps=1, p_uncond=True, progress=False
        )
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(), three_blobs(), s, steps=1, p_uncond=0.2, progress=False)


# ---- checkpoints, resuming, several processes (the scaling appendix) ------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from diffcourse.train import load_checkpoint, main, save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _weights(path):
    return load_checkpoint(path)["model"]


def _same(a, b, atol):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_resume_continues_to_the_same_weights(tmp_path):
    """Kill and resume at the CLI's default batch (512) with 2 threads: stopping at step 15 and
    resuming to step 40 gives the weights of 40 steps in one go, bit for bit (issue 17)."""
    common = ["--config", "blobs-cfg", "--steps", "40", "--batch-size", "512", "--no-progress"]
    with torch_threads(2):
        main(common + ["--out", str(tmp_path / "whole.pt")])
        main(common + ["--out", str(tmp_path / "split.pt"), "--stop-after", "15"])  # interrupted
        assert load_checkpoint(tmp_path / "split.pt")["step"] == 15
        # --steps, --batch-size and --seed left out: the checkpoint's
        main(
            ["--config", "blobs-cfg", "--no-progress", "--out", str(tmp_path / "split.pt")]
            + ["--resume"]
        )
    assert load_checkpoint(tmp_path / "split.pt")["step"] == 40
    assert _same(_weights(tmp_path / "whole.pt"), _weights(tmp_path / "split.pt"), atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "split.pt",
        "whole.pt",
    ]  # no temporary files left


def test_a_truncated_or_foreign_checkpoint_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    main(
        [
            "--config",
            "blobs",
            "--steps",
            "3",
            "--batch-size",
            "32",
            "--no-progress",
            "--out",
            str(good),
        ]
    )
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checkpoint .*cut.pt.* corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="^map_location must be a device"):  # not the file's fault
        load_checkpoint(good, map_location="gpu0")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    save_checkpoint(tmp_path / "other.pt", {"weights": torch.zeros(2)})
    with pytest.raises(ValueError, match="not a diffcourse training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                "blobs-cfg",
                "--steps",
                "3",
                "--batch-size",
                "32",
                "--no-progress",
                "--out",
                str(good),
                "--resume",
            ]
        )


def _cli_error(capsys, argv) -> str:
    """Run the command line on ``argv``; it must exit with 2 and print one line: returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("python -m diffcourse.train: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "option, value",
    [("--steps", "0"), ("--batch-size", "0"), ("--stop-after", "-3"), ("--save-every", "-1")],
)
def test_the_command_line_refuses_bad_numbers(tmp_path, capsys, option, value):
    """0 is not "not given", and a negative count is not a count (issue 17)."""
    out = tmp_path / "x.pt"
    err = _cli_error(capsys, ["--config", "blobs", option, value, "--out", str(out)])
    assert f"argument {option}: must be" in err and f"got {value}" in err
    assert not out.exists()


def test_resume_refuses_another_run(tmp_path, capsys, monkeypatch):
    """--resume with other --steps, --batch-size or --seed than the checkpoint's, or a checkpoint of
    the other budget (another model size), or a corrupt one: one line naming what differs."""
    out = str(tmp_path / "run.pt")
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "quick")
    common = ["--config", "blobs-cfg", "--no-progress", "--out", out]
    main(common + ["--steps", "4", "--batch-size", "32", "--seed", "3", "--stop-after", "2"])
    stored = tmp_path.joinpath("run.pt").read_bytes()
    for option, value, was in (("--steps", "5", 4), ("--batch-size", "16", 32), ("--seed", "4", 3)):
        err = _cli_error(capsys, common + ["--resume", option, value])
        assert f"written with {option} {was}, this run asks for {value}" in err
    assert tmp_path.joinpath("run.pt").read_bytes() == stored  # left as it was
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "full")  # the other model size
    err = _cli_error(capsys, common + ["--resume"])
    assert "written with DIFFCOURSE_BUDGET quick, this run asks for full" in err
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "bogus")
    assert "DIFFCOURSE_BUDGET must be one of" in _cli_error(capsys, common)
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "quick")
    main(common + ["--resume"])  # the same settings, from the checkpoint: it continues to step 4
    assert load_checkpoint(out)["step"] == 4
    tmp_path.joinpath("cut.pt").write_bytes(stored[: len(stored) // 2])
    err = _cli_error(capsys, [*common[:-1], str(tmp_path / "cut.pt"), "--resume"])
    assert "corrupt or truncated" in err and "weights_only" not in err
    assert "does not exist" in _cli_error(
        capsys, [*common[:-1], str(tmp_path / "no.pt"), "--resume"]
    )


def test_a_checkpoint_of_another_size_or_with_foreign_objects_is_refused(tmp_path):
    s = cosine_schedule(50)
    path = tmp_path / "small.pt"
    train_denoiser(_model(), three_blobs(), s, 2, batch_size=8, progress=False, checkpoint=path)
    torch.manual_seed(0)
    bigger = MLPDenoiser(dim=2, T=50, hidden=64, depth=2)
    with pytest.raises(ValueError, match=r"another model size: .* \(32, .*\) there and \(64, "):
        train_denoiser(
            bigger, three_blobs(), s, 2, batch_size=8, progress=False, resume=load_checkpoint(path)
        )
    torch.save({"model": Path("x"), "step": 0}, tmp_path / "foreign.pt")  # an object beyond tensors
    with pytest.raises(ValueError, match="not a diffcourse training checkpoint") as err:
        load_checkpoint(tmp_path / "foreign.pt")
    assert "weights_only" not in str(err.value)


def test_the_command_line_help_and_its_module_import(tmp_path):
    """--help prints even with a bad DIFFCOURSE_BUDGET, and `python -m diffcourse.train` gives no
    "found in sys.modules" RuntimeWarning (the package imports train lazily)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "DIFFCOURSE_BUDGET": "bogus",
    }
    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "diffcourse.train", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "usage: python -m diffcourse.train" in run.stdout, run.stderr
    assert "RuntimeWarning" not in run.stderr, run.stderr


def test_two_processes_reach_the_single_process_weights(tmp_path):
    """torchrun, 2 CPU processes with gloo, the same global batch: the same weights as one process,
    and exactly one checkpoint."""
    # on the CPU (gloo) even where GPUs are: the claim is about the CPU's arithmetic
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
    }
    common = [
        "-m",
        "diffcourse.train",
        "--config",
        "blobs-cfg",
        "--steps",
        "8",
        "--batch-size",
        "64",
        "--no-progress",
    ]
    (tmp_path / "ddp").mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            *common,
            "--out",
            str(tmp_path / "ddp" / "model.pt"),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one.pt")],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == ["model.pt"]
    assert _same(_weights(tmp_path / "ddp" / "model.pt"), _weights(tmp_path / "one.pt"), atol=1e-5)


def test_tensor_data_shards_interleave_into_the_global_batch():
    """With W processes, rank r's rows of each global batch are rows r, r + W, ...: together they are
    the one-process batch."""
    from diffcourse.train import _batches

    x = torch.arange(48, dtype=torch.float32)[:, None]
    gen = torch.Generator()
    one = _batches(x, 8, gen, torch.device("cpu"), torch.float32)
    two = [
        _batches(x, 8, gen, torch.device("cpu"), torch.float32, rank=r, world=2) for r in range(2)
    ]
    for _ in range(9):  # past an epoch boundary (6 batches per epoch)
        whole = next(one)[0][:, 0]
        halves = [next(b)[0][:, 0] for b in two]
        assert torch.equal(torch.stack(halves, 1).flatten(), whole)
    resumed = _batches(x, 8, gen, torch.device("cpu"), torch.float32, start_step=9)
    fresh = _batches(x, 8, gen, torch.device("cpu"), torch.float32)
    for _ in range(9):
        next(fresh)
    assert torch.equal(next(resumed)[0], next(fresh)[0])


def test_clean_classifier_on_images():
    """schedule=None trains on clean inputs: a ConvClassifier(T=None) learns two easy classes."""
    from diffcourse.models import ConvClassifier

    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = torch.randn(64, 1, 8, 8, generator=g) * 0.3 + (2 * y - 1).float()[:, None, None, None]
    torch.manual_seed(0)
    clf = ConvClassifier(T=None, width=8, features=8, num_classes=2)
    losses = train_classifier(
        clf, (x, y), None, steps=80, batch_size=32, lr=1e-2, warmup=1, progress=False
    )
    assert losses[-1] < 0.5 * losses[0]
    assert (clf(x).argmax(1) == y).float().mean() == 1.0


def test_denoiser_loss_is_the_simple_loss_with_condition_dropout():
    from diffcourse.train import classifier_loss, denoiser_loss

    s = cosine_schedule(50)
    m = _model(num_classes=3)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    t, y = torch.tensor([0, 5, 10, 20, 30, 49]), torch.tensor([0, 1, 2, 0, 1, 2])
    drop = torch.tensor([True, False, True, False, False, True])
    a = s.alpha_bar.float()[t][:, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    y_in = torch.tensor([3, 1, 3, 0, 1, 3])  # the null label where dropped
    by_hand = ((m(x_t, t, y_in) - eps) ** 2).mean()
    torch.testing.assert_close(
        denoiser_loss(m, x0, t, eps, s, y=y, drop=drop, null_label=m.null_label), by_hand
    )
    with pytest.raises(ValueError, match="^null_label is needed"):  # dropped to what?
        denoiser_loss(m, x0, t, eps, s, y=y, drop=drop)
    u = _model()
    torch.testing.assert_close(denoiser_loss(u, x0, t, eps, s), ((u(x_t, t) - eps) ** 2).mean())
    from diffcourse.models import MLPClassifier

    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=8, depth=1)
    torch.testing.assert_close(
        classifier_loss(clf, x0, y, t=t, eps=eps, schedule=s),
        torch.nn.functional.cross_entropy(clf(x_t, t), y),
    )


def test_settings_are_checked():
    with pytest.raises(ValueError, match="warmup"):
        train_denoiser(_model(), three_blobs(), cosine_schedule(50), 5, warmup=0, progress=False)
    with pytest.raises(ValueError, match="stop_after"):
        train_denoiser(
            _model(), three_blobs(), cosine_schedule(50), 5, stop_after=-3, progress=False
        )
    with pytest.raises(ValueError, match="^lr must be >"):
        train_denoiser(_model(), three_blobs(), cosine_schedule(50), 5, lr=0.0, progress=False)
    with pytest.raises(TypeError):
        train_denoiser(
            _model(), three_blobs(), cosine_schedule(50), 5, 512
        )  # settings are keyword-only


def test_settings_of_a_trainers_arguments_and_the_dropout_rate():
    """Settings.of takes the fields from a trainer's locals() and checks them; dropout_rate is
    condition dropout's default and its checks, shared by the denoiser and velocity trainers."""
    from diffcourse.train import DEFAULT_P_UNCOND, Settings, dropout_rate

    args = dict(steps=7, batch_size=8, lr=1e-3, warmup=2, seed=3, progress=False)
    args |= dict(checkpoint=None, save_every=0, stop_after=None, config=None)
    assert Settings.of({**args, "model": "not a field"}) == Settings(**args)
    with pytest.raises(ValueError, match="steps"):
        Settings.of({**args, "steps": 0})
    assert dropout_rate(None, True) == DEFAULT_P_UNCOND == 0.1
    assert dropout_rate(None, False) == 0.0 and dropout_rate(0.3, True) == 0.3
    with pytest.raises(ValueError, match="conditional"):
        dropout_rate(0.1, False)
    with pytest.raises(ValueError, match="p_uncond"):
        dropout_rate(1.5, True)


def test_a_condition_other_than_a_label_drops_to_its_null():
    """Chapter 10's conditions: a model with null_condition(c) trains with condition dropout, the
    dropped rows' condition replaced by its null."""
    from diffcourse.train import denoiser_loss

    class CondNet(torch.nn.Module):
        T = 50

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x_t, t, c):
            return self.lin(torch.cat([x_t, c], 1))

        def null_condition(self, c):
            return torch.zeros_like(c)

    s = cosine_schedule(50)
    torch.manual_seed(0)
    net = CondNet()
    g = torch.Generator().manual_seed(0)
    x0, eps, c = (torch.randn(4, 2, generator=g) for _ in range(3))
    t, drop = torch.tensor([1, 2, 3, 4]), torch.tensor([True, False, False, True])
    kept = torch.where(drop[:, None], torch.zeros_like(c), c)
    a = s.alpha_bar.float()[t][:, None]
    by_hand = ((net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, kept) - eps) ** 2).mean()
    got = denoiser_loss(net, x0, t, eps, s, y=c, drop=drop, null_label=net.null_condition(c))
    torch.testing.assert_close(got, by_hand)
    losses = train_denoiser(
        net, (torch.randn(64, 2), torch.randn(64, 2)), s, 5, batch_size=16, progress=False
    )
    assert len(losses) == 5


def _weights_after_training(threads: int, classifier: bool) -> torch.Tensor:
    with torch_threads(threads):
        torch.manual_seed(0)
        s = cosine_schedule(200)
        if classifier:
            from diffcourse.models import MLPClassifier

            model = MLPClassifier(dim=2, T=200, num_classes=3, hidden=128, depth=3)
            train_classifier(model, three_blobs(), s, steps=20, batch_size=512, progress=False)
        else:
            model = MLPDenoiser(dim=2, T=200, hidden=128, depth=4, num_classes=3)
            train_denoiser(model, three_blobs(), s, steps=20, batch_size=512, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("classifier", [False, True])
def test_the_same_weights_at_any_thread_count(classifier):
    """Batch 512 makes the CPU split the backward over threads; the 2-D networks must still come out
    bit for bit the same, run after run and at 1 or 2 threads (issue 17: advanced indexing's backward
    accumulated in a varying order and moved weights by ~1e-7)."""
    two = _weights_after_training(2, classifier)
    assert torch.equal(two, _weights_after_training(2, classifier))
    assert torch.equal(two, _weights_after_training(1, classifier))


@pytest.mark.parametrize("name", ["ch7-unet", "ch7-guide", "ch10-captions", "ch10-superres"])
def test_the_convolutional_networks_too(name):
    """The U-Net, the noise-aware classifier, the caption U-Net (text encoder and
    cross-attention) and the super-resolution U-Net, 8 steps of their recipes at batch 128:
    the same weights at 1 and 2 threads, which their torch.nn layers did not give
    (diffcourse.layers)."""
    import dataclasses

    from diffcourse import recipes

    recipe = dataclasses.replace(recipes.get(name), steps=8)

    def weights(threads):
        with torch_threads(threads):
            model, _ = recipe.train(device="cpu", progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(1), weights(2))


# ---- chapter 10: condition dropout for any condition -----------------------------------------------------
from torch import nn as _nn  # noqa: E402


class _Recorder(_nn.Module):
    """A 'denoiser' of 2-D points whose condition is a tensor of any shape; it records what it sees."""

    def __init__(self):
        super().__init__()
        self.w = _nn.Parameter(torch.zeros(1))
        self.T = 20
        self.seen = []

    def null_condition(self, cond):
        return torch.full_like(cond, -1)

    def forward(self, x_t, t, cond):
        self.seen.append(cond.clone())
        return x_t * self.w


@pytest.mark.parametrize("shape", [(12,), (1, 4, 4)])
def test_condition_dropout_puts_the_models_null_on_dropped_rows(shape):
    from diffcourse.schedules import cosine_schedule as _cos

    n = 4000
    x = torch.randn(n, 2)
    cond = (
        torch.arange(1, n + 1, dtype=torch.float32)
        .reshape(n, *[1] * len(shape))
        .expand(n, *shape)
        .clone()
    )
    model = _Recorder()
    train_denoiser(
        model, (x, cond), _cos(20), steps=3, batch_size=1000, p_uncond=0.3, progress=False
    )
    seen = torch.cat(model.seen)
    dropped = (seen == -1).flatten(1).all(1)
    kept = (seen > 0).flatten(1).all(1)
    assert (dropped | kept).all()  # a row is dropped whole, or left as it was
    assert abs(dropped.double().mean().item() - 0.3) < 0.03
    # the kept rows are the data's own conditions: constant across the row, a valid index
    assert (seen[kept].flatten(1).std(1) == 0).all()


# ---- bad input (issue 17): a classifier's labels, and what is not a model ----------------------------------
def test_a_classifier_is_named_and_its_labels_checked_before_training():
    from diffcourse.models import MLPClassifier

    s = cosine_schedule(50)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=16, depth=1)
    x = torch.randn(64, 2)
    for bad in (3, -1):  # outside 0..C-1: failed inside the loss, or trained silently
        y = torch.zeros(64, dtype=torch.long)
        y[7] = bad
        with pytest.raises(ValueError, match=r"^data: y must lie in 0\.\.2"):
            train_classifier(clf, (x, y), s, 2, batch_size=64, progress=False)
    with pytest.raises(TypeError, match="^data: y must be an integer tensor"):
        train_classifier(clf, (x, torch.zeros(64)), s, 2, batch_size=64, progress=False)
    import numpy as np

    for thing in ("classifier", np.zeros(3), lambda x, t: x):
        with pytest.raises(TypeError, match="^classifier must be a torch.nn.Module"):
            train_classifier(thing, (x, torch.zeros(64, dtype=torch.long)), s, 2, progress=False)
    for generator in ("seed", np.random.default_rng(0)):
        with pytest.raises(TypeError, match="^generator must be a torch.Generator"):
            three_blobs().sample(4, generator=generator)
    for schedule in ("cosine", np.linspace(0.9, 0.1, 50)):
        with pytest.raises(TypeError, match="^schedule must be a diffcourse Schedule"):
            train_denoiser(_model(), three_blobs(), schedule, 2, progress=False)


# ---- what the fuzzing of the public functions found: refused, not trained or loaded silently ----


def test_a_checkpoint_with_a_flipped_bit_is_refused(tmp_path):
    """torch.load reads a weight whose byte was flipped without a word; its CRC does not match."""
    net, path = _model(), tmp_path / "run.pt"
    train_denoiser(net, three_blobs(), cosine_schedule(50), 2, batch_size=32, progress=False,
                   checkpoint=path)  # fmt: skip
    assert load_checkpoint(path)["step"] == 2
    flip_a_byte_of(path, net.inp.weight)
    with pytest.raises(ValueError, match="corrupt: its part .* fails its checksum"):
        load_checkpoint(path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(TypeError, match="^state must be a dict"):
        save_checkpoint(tmp_path / "five.pt", 5)
    assert not (tmp_path / "five.pt").exists()


def test_a_non_finite_loss_stops_the_run_before_its_step_and_its_save(tmp_path):
    x, path = torch.randn(64, 2), tmp_path / "run.pt"
    x[5, 1] = float("nan")
    net = _model()
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="^training denoiser: the loss is nan at step 1"):
        train_denoiser(net, x, cosine_schedule(50), 3, batch_size=64, progress=False,
                       checkpoint=path)  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())) and not path.exists()
    with pytest.raises(ValueError, match="the loss is (inf|nan) at step 1"):
        train_denoiser(_model(), torch.full((64, 2), float("inf")), cosine_schedule(50), 1,
                       batch_size=64, progress=False)  # fmt: skip


def test_a_denoisers_labelled_data_holds_classes_not_the_null_label():
    x, y = torch.randn(8, 2), torch.zeros(8, dtype=torch.long)
    y[3] = 3  # C: the null label of a model with 3 classes, not a class of the data
    with pytest.raises(
        ValueError, match=r"^data: y must lie in 0\.\.2 \(the model's num_classes\)"
    ):
        train_denoiser(_model(3), (x, y), cosine_schedule(50), 1, batch_size=8, progress=False)


def test_bad_data_and_masks_are_named_before_training():
    s = cosine_schedule(50)
    x0, y = torch.randn(64, 2), torch.randint(0, 3, (64,))
    with pytest.raises(TypeError, match="^data must be a GaussianMixture"):
        train_denoiser(_model(3), [x0, y], s, 2, batch_size=16, progress=False)
    with pytest.raises(TypeError, match="^data: x0 must be a floating-point"):
        train_denoiser(_model(3), (x0.long(), y), s, 2, batch_size=16, progress=False)
    with pytest.raises(TypeError, match="^data must be a GaussianMixture"):
        train_denoiser(_model(), "x0", s, 2, batch_size=16, progress=False)
    from diffcourse.train import denoiser_loss

    t, eps = torch.full((4,), 3), torch.randn(4, 2)
    with pytest.raises((TypeError, ValueError), match="^drop"):
        denoiser_loss(_model(3), x0[:4], t, eps, s, y=y[:4], drop=torch.ones(4), null_label=3)


def test_a_refused_resume_leaves_the_model_as_it_was(tmp_path):
    net, path = _model(), tmp_path / "run.pt"
    train_denoiser(net, three_blobs(), cosine_schedule(50), 4, batch_size=32, progress=False,
                   checkpoint=path)  # fmt: skip
    other = _model()
    torch.nn.init.zeros_(other.inp.weight)
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(ValueError, match="at step 4, outside a run of 2 steps"):
        train_denoiser(other, three_blobs(), cosine_schedule(50), 2, batch_size=32,
                       progress=False, resume=load_checkpoint(path))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    state = load_checkpoint(path)
    for key, bad in (("step", "4"), ("generator", torch.zeros(3)), ("optimizer", None)):
        with pytest.raises(ValueError, match=f"^resume: its (step|generator|{key!r})"):
            train_denoiser(other, three_blobs(), cosine_schedule(50), 5, batch_size=32,
                           progress=False, resume={**state, key: bad})  # fmt: skip
    with pytest.raises(ValueError, match=r"^resume is not a diffcourse training checkpoint"):
        train_denoiser(other, three_blobs(), cosine_schedule(50), 5, progress=False, resume={})
    # states that only loading can refuse, or that pass every type check: refused, model untouched
    weights = {**state["model"], "inp.weight": "str"}
    bad_states = {
        "generator": torch.zeros(3, dtype=torch.uint8),  # the wrong length for a CPU generator
        "optimizer": {"state": {}, "param_groups": []},  # another optimizer's layout
        "model": weights,
        "step": -1,
    }
    for key, bad in bad_states.items():
        with pytest.raises(ValueError, match="^resume"):
            train_denoiser(other, three_blobs(), cosine_schedule(50), 5, batch_size=32,
                           progress=False, resume={**state, key: bad})  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(before, other.parameters())), key


def test_a_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    for where, message in ((tmp_path / "file" / "run.pt", "is a file, not a folder"),
                           (tmp_path, "is a folder")):  # fmt: skip
        net = _model()
        before = [p.clone() for p in net.parameters()]
        with pytest.raises(ValueError, match=message):  # not after the run, its work lost
            train_denoiser(net, three_blobs(), cosine_schedule(50), 2, batch_size=32,
                           progress=False, checkpoint=where)  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_classifier_loss_takes_classes_only():
    from diffcourse.models import MLPClassifier
    from diffcourse.train import classifier_loss

    s, x = cosine_schedule(50), torch.randn(4, 2)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=16, depth=1)
    t, eps = torch.zeros(4, dtype=torch.long), torch.randn(4, 2)
    for y, error in ((torch.tensor([0, 1, -100, 2]), ValueError), (torch.tensor([0, 1, 3, 2]), ValueError),
                     (torch.rand(4, 3), TypeError)):  # fmt: skip
        with pytest.raises(error, match="^y "):
            classifier_loss(clf, x, y, t=t, eps=eps, schedule=s)
    assert classifier_loss(clf, x, torch.tensor([0, 1, 2, 2]), t=t, eps=eps, schedule=s) > 0


def test_more_processes_than_gpus_is_refused_by_name(monkeypatch, capsys):
    """torchrun --nproc_per_node 2 on a machine with one GPU: process 1 has no cuda:1 (CUDA's own
    error said only "invalid device ordinal"); it stops before joining the process group."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SystemExit):
        main(["--config", "blobs", "--steps", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert "--nproc_per_node" in err and "1 found" in err and "CUDA_VISIBLE_DEVICES" in err


def test_range_checks_read_the_device_at_the_first_step_only(monkeypatch):
    """On a GPU each read of t's or y's range waits for the device: training reads them at its
    first step, as a sampler at its first call (the labels were checked before training)."""
    from diffcourse import checks
    from diffcourse.models import MLPClassifier, UNet

    calls = []  # the models' and q_sample's checks read through checks.read_values
    original = checks.read_values
    monkeypatch.setattr(checks, "read_values", lambda x: calls.append(1) or original(x))
    s, blobs = cosine_schedule(50), three_blobs()
    images = (torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 3)
    runs = {  # name: steps -> a training run of that many steps
        "MLP": lambda n: train_denoiser(
            MLPDenoiser(dim=2, T=50, hidden=16, depth=2, num_classes=3),
            blobs,
            s,
            n,
            batch_size=32,
            p_uncond=0.2,
            progress=False,
        ),
        "U-Net": lambda n: train_denoiser(
            UNet(channels=1, size=8, T=50, num_classes=3, width=8),
            images,
            s,
            n,
            batch_size=4,
            p_uncond=0.2,
            progress=False,
        ),
        "classifier": lambda n: train_classifier(
            MLPClassifier(dim=2, T=50, num_classes=3, hidden=16, depth=2),
            blobs,
            s,
            n,
            batch_size=32,
            progress=False,
        ),
    }
    for name, run in runs.items():
        counts = []
        for steps in (2, 6):
            calls.clear()
            run(steps)
            counts.append(len(calls))
        assert counts[0] == counts[1] > 0, (name, counts)


def test_foreach_adamw_gives_the_loops_weights(monkeypatch):
    """fit asks AdamW for its foreach update, for speed (PyTorch picks it only on GPUs): the same
    weights bit for bit as the loop over tensors."""
    s, weights = cosine_schedule(50), []
    adamw = torch.optim.AdamW
    for foreach in (True, False):
        monkeypatch.setattr(torch.optim, "AdamW", functools.partial(_adamw, adamw, foreach))
        model = _model(num_classes=3)
        train_denoiser(model, three_blobs(), s, steps=100, batch_size=64, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(*weights)


def _adamw(adamw, use_foreach, params, **kw):
    """AdamW with ``foreach=use_foreach`` in place of the caller's."""
    return adamw(params, **{**kw, "foreach": use_foreach})


def test_a_float64_model_trains_on_a_mixture():
    """A mixture's draws reach the model in its own dtype. Before, they were cast to float32 whatever
    the model, so a float64 model could not train on a mixture at all (the model refused x_t)."""
    from diffcourse.models import MLPClassifier

    mix = three_blobs().to(dtype=torch.float64)
    den = MLPDenoiser(dim=2, T=20, hidden=8, depth=1, num_classes=3).double()
    losses = train_denoiser(
        den, mix, cosine_schedule(20), 3, batch_size=16, warmup=1, progress=False
    )
    clf = MLPClassifier(dim=2, num_classes=3, T=20, hidden=8, depth=1).double()
    losses += train_classifier(
        clf, mix, cosine_schedule(20), 3, batch_size=16, warmup=1, progress=False
    )
    assert len(losses) == 6 and torch.tensor(losses).isfinite().all()


def test_the_losses_refuse_an_empty_batch():
    """A mean over no rows is NaN: both losses returned it silently for an empty batch."""
    from diffcourse.models import MLPClassifier
    from diffcourse.train import classifier_loss, denoiser_loss

    s, x0, t = cosine_schedule(20), torch.empty(0, 2), torch.empty(0, dtype=torch.long)
    den = MLPDenoiser(dim=2, T=20, hidden=8, depth=1, num_classes=3)
    clf = MLPClassifier(dim=2, num_classes=3, T=20, hidden=8, depth=1)
    with pytest.raises(ValueError, match="^x0 must hold at least one sample"):
        denoiser_loss(den, x0, t, x0, s, y=t)
    with pytest.raises(ValueError, match="^x0 must hold at least one sample"):
        classifier_loss(clf, x0, t, t=t, eps=x0, schedule=s)
