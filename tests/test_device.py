import pytest
import torch

from diffcourse.device import budget, get_device, pick


def test_get_device_is_usable():
    d = get_device()
    assert isinstance(d, torch.device)
    torch.zeros(1, device=d)
    if not torch.cuda.is_available():
        assert d.type in ("cpu", "mps")


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
    with pytest.raises(TypeError, match="fn"):
        timed(3)
