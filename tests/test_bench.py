"""The bench runs end to end at a tiny size and reports positive rates."""

import pytest

from diffcourse.bench import main, run


def test_bench_runs_and_reports_rates(capsys):
    out = run(width=8, batch_size=16, train_steps=2, samples=20, sample_steps=2)
    assert set(out) == {"train images/s", "sample images/s, batched", "sample images/s, two passes"}
    assert all(v > 0 for v in out.values())
    main(
        [
            "--width",
            "8",
            "--batch-size",
            "16",
            "--train-steps",
            "2",
            "--samples",
            "20",
            "--sample-steps",
            "2",
        ]
    )
    assert "diffcourse bench on" in capsys.readouterr().out
    with pytest.raises(ValueError, match="width"):
        run(width=0)
