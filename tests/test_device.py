import pytest
import torch

from diffcourse.device import budget, full_precision, get_device, pick


def test_get_device_is_usable():
    d = get_device()
    assert isinstance(d, torch.device)
    torch.zeros(1, device=d)
    if not torch.cuda.is_available():
        assert d.type == "cpu"


def test_get_device_never_picks_mps(monkeypatch):
    # MPS has no float64, which the exact checks of labs 3 and 12 need: a Mac runs the labs on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device().type == "cpu"
    monkeypatch.delenv("DIFFCOURSE_BUDGET", raising=False)
    assert budget() == "quick"


def test_budget_override(monkeypatch):
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "full")
    assert budget() == "full" and pick(1, 2) == 2
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "Quick")
    assert budget() == "quick" and pick(1, 2) == 1
    monkeypatch.delenv("DIFFCOURSE_BUDGET")
    assert budget() == ("full" if get_device().type != "cpu" else "quick")
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "huge")
    with pytest.raises(ValueError, match="DIFFCOURSE_BUDGET"):
        budget()


def test_timer_and_timed():
    import time

    from diffcourse.device import synchronize, timed, timer

    with timer() as clock:
        time.sleep(0.02)
    assert 0.015 < clock.seconds < 1.0
    seconds, out = timed(lambda: torch.ones(3).sum().item())
    assert out == 3.0 and seconds >= 0
    synchronize()
    synchronize(torch.device("cpu"))
    with pytest.raises(TypeError, match="^fn must be callable"):
        timed(3)


def test_full_precision_turns_tf32_off_and_puts_it_back():
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = [f.allow_tf32 for f in flags]
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # the GPU's
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with full_precision():
                assert [f.allow_tf32 for f in flags] == [False, False]
                raise RuntimeError("inside")
        assert [f.allow_tf32 for f in flags] == [True, True]  # back, after an error too
    finally:
        for f, value in zip(flags, before):
            f.allow_tf32 = value


def test_get_device_announces_device_and_budget(capsys, monkeypatch):
    monkeypatch.setenv("DIFFCOURSE_BUDGET", "full")
    d = get_device(announce=True)
    assert capsys.readouterr().out == f"device: {d}, budget: full\n"
    assert get_device() == d and capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="announce"):
        get_device(announce="yes")
