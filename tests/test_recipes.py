"""Named recipes: the labs' settings, one call each, and the on-disk cache of trained weights."""

import warnings

import pytest
import torch
from conftest import flip_a_byte_of

from diffcourse import recipes
from diffcourse.data import three_blobs
from diffcourse.models import MLPClassifier, MLPDenoiser
from diffcourse.schedules import cosine_schedule
from diffcourse.train import train_classifier, train_denoiser

CPU = torch.device("cpu")
SMALL = dict(steps=3, batch_size=32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCOURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_budgets_and_aliases():
    names = recipes.names()
    for name in (
        "ch1-denoiser",
        "ch2-weak",
        "ch2-strong",
        "ch4-denoiser",
        "ch4-classifier",
        "ch5-cfg-p0.1",
        "ch5-cfg-p0.2",
        "ch5-cfg-p0.5",
        "ch7-judge",
        "ch7-unet",
        "ch7-unet-short",
        "ch7-guide",
    ):
        assert name in names
    quick, full = recipes.get("ch7-unet", "quick"), recipes.get("ch7-unet", "full")
    assert (quick.steps, quick.model_args["width"]) == (900, 32) and (
        full.steps,
        full.model_args["width"],
    ) == (6000, 64)
    assert recipes.get("ch7-unet-short", "full").steps == 175
    assert recipes.get("blobs", "quick") == recipes.get("ch4-denoiser", "quick")
    assert recipes.get("blobs-cfg", "quick").name == "ch5-cfg-p0.1"
    assert recipes.get("ch4-denoiser", "quick", steps=7, seed=3).config()["steps"] == 7
    with pytest.raises(ValueError, match="name"):
        recipes.get("ch99")
    with pytest.raises(ValueError, match="budget"):
        recipes.get("ch1-denoiser", "huge")
    with pytest.raises(TypeError, match="^budget must be a str"):  # found by fuzzing
        recipes.get("ch1-denoiser", 5)
    with pytest.raises(ValueError, match="steps"):
        recipes.get("ch1-denoiser", steps=0)
    with pytest.raises(TypeError, match="hidden"):
        recipes.get("ch1-denoiser", hidden=3)


def test_a_recipe_is_the_labs_code():
    """Chapter 4's classifier by hand, as lab 4 trains it, and by its recipe: the same weights."""
    torch.manual_seed(0)
    by_hand = MLPClassifier(dim=2, T=200, num_classes=3, hidden=128, depth=3)
    train_classifier(
        by_hand,
        three_blobs(),
        cosine_schedule(200),
        steps=5,
        batch_size=512,
        lr=3e-3,
        seed=1,
        progress=False,
    )
    recipe = recipes.trained("ch4-classifier", "quick", CPU, cache=False, progress=False, steps=5)
    assert all(
        torch.equal(a, b)
        for a, b in zip(by_hand.state_dict().values(), recipe.state_dict().values())
    )
    torch.manual_seed(0)
    weak = MLPDenoiser(dim=2, T=200, hidden=128, depth=4, num_classes=2, label_pathway="output")
    from diffcourse.data import checkerboard

    train_denoiser(
        weak,
        checkerboard(),
        cosine_schedule(200),
        steps=5,
        batch_size=512,
        lr=3e-3,
        p_uncond=0.0,
        seed=0,
        progress=False,
    )
    recipe = recipes.trained("ch2-weak", "quick", CPU, cache=False, progress=False, steps=5)
    assert all(
        torch.equal(a, b) for a, b in zip(weak.state_dict().values(), recipe.state_dict().values())
    )
    assert not recipe.training


def test_a_cache_that_cannot_be_written_only_warns(cache, monkeypatch):
    """torch's writer reports a full disk as a RuntimeError: the trained model is still returned."""

    def full_disk(path, state):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    import diffcourse.train

    monkeypatch.setattr(diffcourse.train, "save_checkpoint", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write the model cache"):
        run = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    assert not run.cached and len(run.losses) == 3


def test_the_second_call_loads_instead_of_training(cache, monkeypatch):
    first = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    assert not first.cached and len(first.losses) == 3
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("ch4-denoiser-quick-")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(recipes.Recipe, "train", no_training)
    second = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    assert second.cached and second.losses == first.losses and second.seconds == first.seconds
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values())
    )
    assert not second.model.training
    assert isinstance(
        recipes.trained("blobs", "quick", CPU, progress=False, **SMALL), MLPDenoiser
    )  # the alias too


def test_a_changed_config_trains_again(cache):
    a = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    b = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, steps=4, batch_size=32)
    c = recipes.train_or_load(
        "ch4-denoiser", "quick", CPU, progress=False, steps=3, batch_size=32, lr=1e-3
    )
    assert not (a.cached or b.cached or c.cached) and len(list(cache.iterdir())) == 3
    assert recipes.cache_path(a.recipe, CPU) != recipes.cache_path(b.recipe, CPU)


def test_the_key_holds_device_torch_and_sources():
    key = recipes.cache_key(recipes.get("ch4-denoiser", "quick"), CPU)
    assert (
        key["device"] == "cpu" and key["torch"] == torch.__version__ and len(key["sources"]) == 64
    )
    assert key["recipe"]["steps"] == 3000 and "threads" in key


def test_the_sources_hash_reads_code_not_comments_docstrings_or_layout(tmp_path):
    def code(text: str) -> str:
        (tmp_path / "m.py").write_text(text)
        return recipes._code_only(tmp_path / "m.py")

    base = code('"""Module."""\n\ndef f(x):\n    """Doc."""\n    return x * 2  # twice\n')
    assert code('"""Other."""\ndef f(x):\n    """New doc."""\n    return x*2\n') == base
    assert code("def f(x):\n    return x * 2\n") == base  # no docstrings at all
    assert code('def f(x):\n    """Doc."""\n    return x * 3\n') != base  # a factor
    assert code('def f(x):\n    """Doc."""\n    return "x"\n') != base
    # a function that is only a docstring keeps a body, unlike one without the function
    assert code('def g():\n    """Doc."""\n') != code("")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "other-key", "flipped bit"])
def test_a_damaged_or_foreign_cache_file_is_trained_again_with_a_warning(cache, damage):
    first = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    path = recipes.cache_path(first.recipe, CPU)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "flipped bit":  # torch.load would read the wrong weight without a word
        flip_a_byte_of(path, first.model.inp.weight)
    elif damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        state = torch.load(path, weights_only=True)
        state["key"]["recipe"]["steps"] = 99
        torch.save(state, path)
    with pytest.warns(RuntimeWarning, match="damaged or foreign"):
        again = recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    assert not again.cached
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values())
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next call loads quietly
        assert recipes.train_or_load("ch4-denoiser", "quick", CPU, progress=False, **SMALL).cached
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # no temporary file left


def test_cache_off_and_the_callers_random_state(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCOURSE_CACHE", "off")
    assert recipes.cache_dir() is None
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    recipes.trained("ch4-denoiser", "quick", CPU, progress=False, **SMALL)
    assert torch.equal(torch.rand(3), expected)  # the recipe seeds inside, and restores
    monkeypatch.delenv("DIFFCOURSE_CACHE")
    assert recipes.cache_dir() == recipes.Path.home() / ".cache" / "diffcourse"


def test_the_command_line_trains_any_recipe(tmp_path):
    from diffcourse.train import load_checkpoint, main

    out = main(
        [
            "--config",
            "ch7-judge",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--no-progress",
            "--out",
            str(tmp_path / "judge.pt"),
        ]
    )
    state = load_checkpoint(out)
    assert (
        state["step"] == 2
        and state["config"]["name"] == "ch7-judge"
        and state["config"]["trainer"] == "classifier"
    )
    with pytest.raises(SystemExit, match="^2$"):  # a usage error (tests/test_train.py)
        main(
            ["--config", "blobs", "--steps", "0", "--no-progress", "--out", str(tmp_path / "x.pt")]
        )


# ---- chapter 10: a caption model and a super-resolution model ------------------------------------------
from diffcourse.conditioned import CaptionUNet, SuperResUNet, low_resolution  # noqa: E402
from diffcourse.text import caption_mask, detokenize  # noqa: E402


def test_chapter_10_recipes_and_their_data():
    for name, cls in (("ch10-captions", CaptionUNet), ("ch10-superres", SuperResUNet)):
        assert name in recipes.names()
        quick, full = recipes.get(name, "quick"), recipes.get(name, "full")
        assert full.steps > quick.steps and full.model_args["width"] > quick.model_args["width"]
        model = recipes.trained(name, "quick", CPU, cache=False, progress=False, **SMALL)
        assert isinstance(model, cls) and not model.training
    x, tokens = recipes.get("ch10-captions", "quick").make_data(CPU)
    split = load_digits_split(holdout=0.25, seed=0)
    n = split.y_train.numel()
    assert x.shape == (recipes.CAPTION_COPIES * n, 1, 8, 8) and tokens.shape[0] == x.shape[0]
    labels = split.y_train.repeat(recipes.CAPTION_COPIES)
    assert caption_mask(detokenize(tokens))[
        torch.arange(len(labels)), labels
    ].all()  # every caption is true
    x, low = recipes.get("ch10-superres", "quick").make_data(CPU)
    assert torch.equal(low, low_resolution(x))


def test_the_caption_recipe_is_the_labs_code():
    x, tokens = recipes.get("ch10-captions", "quick").make_data(CPU)
    torch.manual_seed(0)
    by_hand = CaptionUNet(width=16, text_dim=32, text_layers=1)
    train_denoiser(
        by_hand,
        (x, tokens),
        recipes.get("ch10-captions").make_schedule(),
        steps=3,
        batch_size=32,
        lr=4e-3,
        p_uncond=0.1,
        seed=0,
        progress=False,
    )
    recipe = recipes.trained("ch10-captions", "quick", CPU, cache=False, progress=False, **SMALL)
    assert all(
        torch.equal(a, b)
        for a, b in zip(by_hand.state_dict().values(), recipe.state_dict().values())
    )


from diffcourse.data import load_digits_split  # noqa: E402


def test_summary_rows_are_the_mean_of_the_last_losses():
    recipe = recipes.get("ch5-cfg-p0.1")
    runs = {
        0.1: recipes.Trained(None, [9.0] * 5 + [1.0, 2.0, 3.0], 12.5, True, recipe),
        0.5: recipes.Trained(None, [0.5, 0.25, 0.75], 3.0, False, recipe),
    }
    assert recipes.summary(runs, last=3) == [[0.1, 2.0, 12.5, True], [0.5, 0.5, 3.0, False]]
    with pytest.raises(ValueError, match="last"):
        recipes.summary(runs, last=4)
    with pytest.raises(TypeError, match="runs"):
        recipes.summary({0.1: "model"})
    with pytest.raises(TypeError, match="^runs must be a dict"):
        recipes.summary([runs[0.1]])
    with pytest.raises(ValueError, match="^runs must hold at least one run"):  # empty: a value
        recipes.summary({})


def test_describe_is_two_short_lines_with_the_mean_of_the_last_losses():
    recipe = recipes.get("ch5-cfg-p0.1")
    net = torch.nn.Linear(3, 2)  # 8 parameters
    run = recipes.Trained(net, [9.0] * 5 + [1.0, 2.0, 3.0], 12.4, False, recipe)
    line = run.describe(last=3)
    assert line == (
        f"ch5-cfg-p0.1: 8 parameters, {recipe.steps:,} steps, trained in 12 s\n"
        "  mean training loss over the last 3 steps: 2.0000"
    )
    assert all(len(part) <= 79 for part in line.splitlines())  # fits the page
    assert "from the cache" in run._replace(cached=True).describe(last=3)
    with pytest.raises(ValueError, match="last"):
        run.describe(last=9)
    with pytest.raises(ValueError, match="last"):
        run.describe(last=0)


def test_seed_shift_moves_every_recipes_seeds(monkeypatch):
    base = {name: recipes.get(name, "quick") for name in recipes.names()}
    monkeypatch.setenv("DIFFCOURSE_SEED_SHIFT", "2")
    for name, recipe in base.items():
        shifted = recipes.get(name, "quick")
        assert (shifted.init_seed, shifted.seed) == (recipe.init_seed + 2, recipe.seed + 2)
        assert shifted.config() != recipe.config()  # so the cache keeps the two apart
    assert recipes.get("ch4-denoiser", "quick", seed=5).seed == 7
    for bad in ("one", "-1", "1.5"):
        monkeypatch.setenv("DIFFCOURSE_SEED_SHIFT", bad)
        with pytest.raises(ValueError, match="^DIFFCOURSE_SEED_SHIFT must be"):
            recipes.get("ch4-denoiser", "quick")
    monkeypatch.setenv("DIFFCOURSE_SEED_SHIFT", " ")
    assert recipes.get("ch4-denoiser", "quick") == base["ch4-denoiser"]
