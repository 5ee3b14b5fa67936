"""Plant an error in a formula the course teaches, and check that the lab teaching it fails.

A lab's asserts are meant to fail when the thing they name is wrong. This script shows that they
do: each entry of PLANTS writes one small, plausible mistake (a sign, a factor, two swapped terms)
into a copy of the package, runs the lab that teaches that formula against the copy, and requires
the lab to stop at one of its asserts. A plant the lab lets through, or one it only trips over
with some other error, is reported as not caught, and the exit status is 1.

    python scripts/planted.py            # every plant, one lab after another (make planted)
    python scripts/planted.py 04 08b     # the plants of the labs whose names start so
    python scripts/planted.py --list     # what each plant changes, without running anything
    python scripts/planted.py --quick    # only the plants caught before their lab trains anything
                                         # (tests/test_planted.py runs them in `make test`)

The repository is never edited: the package is copied into a temporary folder that comes first
on the lab's import path. The labs train into their own model cache (DIFFCOURSE_PLANTED_CACHE,
default _build/.planted_cache): a plant in a file that training reads changes the cache's key and
trains afresh anyway, and the cache `make test` uses stays clean. A run of every plant takes about
half as long as nbval on a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import List, NamedTuple, Optional

ROOT = Path(__file__).resolve().parents[1]


class Plant(NamedTuple):
    lab: str  # the notebook's file name in notebooks/
    file: str  # the package file, relative to diffcourse/
    old: str  # exact text that occurs once in that file
    new: str  # the planted mistake
    what: str  # the mistake, in words
    quick: bool = False  # caught before the lab trains anything: `make test` runs it


PLANTS: List[Plant] = [
    Plant(
        "01_diffusion.ipynb",
        "targets.py",
        "return (x_t - (1 - a).sqrt() * eps) / a.sqrt()",
        "return (x_t - 1.001 * (1 - a).sqrt() * eps) / a.sqrt()",
        "x0 from eps (Luo eq. 115) with the noise term 0.1% too large",
        quick=True,
    ),
    Plant(
        "02_conditional.ipynb",
        "metrics.py",
        "formula.append((1 - a) * grad.pow(2).sum(1))",
        "formula.append((1 - a) ** 0.5 * grad.pow(2).sum(1))",
        "the label's gain G_t with sqrt(1 - alpha_bar) for (1 - alpha_bar)",
        quick=True,
    ),
    Plant(
        "03_bayes_scores.ipynb",
        "mixture.py",
        "return ((resp_y - resp).to(self._prec_mu.dtype) @ self._prec_mu).to(self.dtype)",
        "return ((resp_y - 0.99 * resp).to(self._prec_mu.dtype) @ self._prec_mu).to(self.dtype)",
        "grad log p(y|x) (Luo eq. 165 rearranged) with the unconditional responsibilities 1% short",
        quick=True,
    ),
    Plant(
        "04_classifier_guidance.ipynb",
        "guidance.py",
        '.alpha_bar).sqrt(),\n        "the schedule classifier_guided_eps_fn',
        '.alpha_bar),\n        "the schedule classifier_guided_eps_fn',
        "eq. 166 in noise units scaled by 1 - alpha_bar instead of its square root",
    ),
    Plant(
        "04_classifier_guidance.ipynb",
        "guidance.py",
        "    keep[-1] = 0.0\n",
        "    keep[0] = 0.0\n",
        "skip_first_step leaves the last step of sampling (t = 1) unguided instead of the first",
    ),
    Plant(
        "05_classifier_free_guidance.ipynb",
        "guidance.py",
        '"uncond")\n    return gamma * cond + (1 - gamma) * uncond',
        '"uncond")\n    return cond + gamma * (cond - uncond)',
        "eq. 170 with gamma used as Ho and Salimans' w (which is gamma - 1)",
    ),
    Plant(
        "06_what_guidance_samples.ipynb",
        "samplers.py",
        "delta = 2 * alpha * (snr * z_norm",
        "delta = alpha * (snr * z_norm",
        "the corrector's Langevin step size without its factor 2",
        quick=True,
    ),
    Plant(
        "06_what_guidance_samples.ipynb",
        "mixture.py",
        "classifier_free_guidance(score_to_eps(cond, a), score_to_eps(uncond, a), gamma)",
        "classifier_free_guidance(score_to_eps(uncond, a), score_to_eps(cond, a), gamma)",
        "exact eq. 170 with its two branches swapped",
        quick=True,
    ),
    Plant(
        "07_guidance_on_images.ipynb",
        "guidance.py",
        "return model(x_t, t, y if gamma == 1 else labels[y.shape[0] :])",
        "return model(x_t, t, y if gamma == 0 else labels[y.shape[0] :])",
        "eq. 170's two one-branch cases swapped: gamma = 0 conditional, gamma = 1 not",
    ),
    Plant(
        "07_guidance_on_images.ipynb",
        "guidance.py",
        "classifier_guidance(eps, -sigma.at(t, x_t) * grad_fn",
        "classifier_guidance(eps, sigma.at(t, x_t) * grad_fn",
        "eq. 166 in noise units with the classifier's sign flipped",
    ),
    Plant(
        "08_fewer_steps.ipynb",
        "samplers.py",
        "xi = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5",
        "xi = 0.9 * eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5",
        "DDIM's step noise xi 10% short at every eta > 0 (eta = 1 no longer DDPM)",
        quick=True,
    ),
    Plant(
        "08b_guidance_variants.ipynb",
        "guidance.py",
        "lambda step: gamma if t_low <= step <= t_high else 1.0",
        "lambda step: 1.0 if t_low <= step <= t_high else gamma",
        "interval guidance swapped: guided outside the interval, conditional inside",
        quick=True,
    ),
    Plant(
        "08b_guidance_variants.ipynb",
        "guidance.py",
        "(self.gamma - 1) * (delta - parallel + self.eta * parallel)",
        "(self.gamma - 1) * (parallel + self.eta * (delta - parallel))",
        "APG damping the orthogonal part instead of the parallel one",
        quick=True,
    ),
    Plant(
        "08b_guidance_variants.ipynb",
        "guidance.py",
        "share = 1 - step / (T - 1) if rising else step / (T - 1)",
        "share = step / (T - 1) if rising else 1 - step / (T - 1)",
        "the ramped scale's two directions swapped: rising where it should fall",
        quick=True,
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "guidance.py",
        "return phi * guided * scale + (1 - phi) * guided",
        "return phi * guided + (1 - phi) * guided * scale",
        "rescaled CFG with its two weights swapped (phi on the plain prediction)",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "targets.py",
        "return a.sqrt() * v + (1 - a).sqrt() * x_t",
        "return a.sqrt() * v - (1 - a).sqrt() * x_t",
        "v turned back into noise with the sign of its x_t term flipped",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "metrics.py",
        "((x - high).clamp(min=0) + (low - x).clamp(min=0))",
        "((x - high).clamp(min=0) + (x - low).clamp(min=0))",
        "out_of_range's distance below the data's range with its sign flipped",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "metrics.py",
        "outside.append(out_of_range(x))",
        "outside.append(out_of_range(x.clamp(-1, 1)))",
        "out_of_range read after the images are clamped to the data's range",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "guidance.py",
        "lambda step: gamma if t_low <= step <= t_high else 1.0",
        "lambda step: gamma if t_low <= step else 1.0",
        "interval guidance without its upper end: guided at every level above t_low",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "guidance.py",
        """            delta = delta if self.average is None else delta + self.beta * self.average
            self.average = delta""",
        """            raw = delta
            delta = delta if self.average is None else delta + self.beta * self.average
            self.average = raw""",
        "APG's momentum looking back to the raw update, not to its running average",
    ),
    Plant(
        "08c_variants_on_digits.ipynb",
        "guidance.py",
        "clipped = torch.maximum(torch.minimum(x0, s), -s) / s",
        "clipped = x0.clamp(-1, 1)",
        "dynamic thresholding reduced to a static clip to [-1, 1] (s taken as 1)",
    ),
    Plant(
        "10_conditions_exact.ipynb",
        "guidance.py",
        "return composed_eps_fn(negative_fn, [(cond_fn, gamma)])",
        "return composed_eps_fn(negative_fn, [(cond_fn, gamma - 1)])",
        "a negative prompt's weight read as gamma - 1 (the w of Ho and Salimans)",
        quick=True,
    ),
    Plant(
        "10_conditions_exact.ipynb",
        "samplers.py",
        "return x + delta * score + (2 * delta) ** 0.5 * noise",
        "return x + delta * score + delta**0.5 * noise",
        "chapter 6's Langevin corrector, which the lab uses, without its noise's factor 2",
        quick=True,
    ),
    Plant(
        "10_conditions_exact.ipynb",
        "guidance.py",
        "return composed_eps_fn(negative_fn, [(cond_fn, gamma)])",
        "return composed_eps_fn(negative_fn, [(cond_fn, 2.0)])",
        "a negative prompt that ignores its gamma (always 2, the lab's main scale)",
        quick=True,
    ),
    Plant(
        "10_conditions_learned.ipynb",
        "guidance.py",
        "return composed_eps_fn(negative_fn, [(cond_fn, gamma)])",
        "return composed_eps_fn(cond_fn, [(negative_fn, gamma)])",
        "a negative prompt with its two conditions swapped",
    ),
    Plant(
        "11_flow_matching.ipynb",
        "flow.py",
        "(v + _velocity(v_fn, x_next, s, run, i))",
        "(v + _velocity(v_fn, x_next, t, run, i))",
        "Heun's second slope taken at the step's start time t, not its end s",
    ),
    Plant(
        "11_flow_matching.ipynb",
        "flow.py",
        "g = _col(check_gammas(gamma, n), x_t)",
        "g = 0.9 * _col(check_gammas(gamma, n), x_t)",
        "guidance distillation's target at 0.9 times the student's gamma",
    ),
    Plant(
        "11_flow_matching.ipynb",
        "flow.py",
        "norm2 = (u * u).sum(1)",
        "norm2 = (c * c).sum(1)",
        "CFG-Zero*'s omega* divided by |v_c|^2, not |v_u|^2",
    ),
    Plant(
        "12_claims_checked.ipynb",
        "mixture.py",
        "return self._score_from(x, resp_y, comp) - self._score_from(x, resp, comp)",
        "return self._score_from(x, resp_y, comp) - 0.99 * self._score_from(x, resp, comp)",
        "grad log p(y|x) with one covariance per component (the digits'): the score of p(x) 1% short",
        quick=True,
    ),
    Plant(
        "12_claims_checked.ipynb",
        "guidance.py",
        "torch.expm1(math.log(1 - pi) - log_ratio",
        "torch.expm1(math.log(pi) - log_ratio",
        "feedback guidance's scale with pi for 1 - pi: R / (R - pi)",
    ),
    Plant(
        "12_claims_checked.ipynb",
        "guidance.py",
        "classifier_free_guidance(cond, model(x_t, t, y_rand), gamma)",
        "classifier_free_guidance(cond, model(x_t, t, y), gamma)",
        "independent condition guidance given the asked label, not a random one",
    ),
    Plant(
        "12_claims_checked.ipynb",
        "guidance.py",
        "lambda step: gamma if t_low <= step <= t_high else 1.0",
        "lambda step: gamma if t_low <= step <= t_high else gamma",
        "interval guidance that keeps gamma outside its interval too (a swapped branch)",
    ),
]


def _run_lab(path: Path) -> int:
    """Run the lab's code cells in this process, in order; the exit status says how it ended:
    0 every cell passed, 3 an assert of the lab failed, 4 any other error (an AssertionError
    raised outside the lab's own cells included)."""
    os.chdir(path.parent)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = {}  # a cell's name in tracebacks -> its code
    namespace = {"__name__": "__main__"}
    # as IPython runs a cell: its magics (the install cell's %pip) turned into Python
    from IPython.core.inputtransformer2 import TransformerManager

    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        name = f"{path.name}, code cell {i + 1}"
        sources[name] = TransformerManager().transform_cell("".join(cell["source"]))
        try:
            exec(compile(sources[name], name, "exec", dont_inherit=True), namespace)
        except AssertionError:
            frame = traceback.extract_tb(sys.exc_info()[2])[-1]
            if frame.filename in sources:
                at = sources[frame.filename].splitlines()[frame.lineno - 1].strip()
                print(f"PLANTED: assert failed in {frame.filename[len(path.name) + 2 :]}: {at}")
                return 3
            traceback.print_exc()
            print(f"PLANTED: code cell {i + 1} stopped at an AssertionError outside the lab")
            return 4
        except Exception:
            traceback.print_exc()
            print(f"PLANTED: code cell {i + 1} stopped with an error that is not an assert")
            return 4
    return 0


def apply(plant: Plant, package: Path, dry_run: bool = False) -> None:
    """Write ``plant`` into the package copy at ``package``; its text must occur there once
    (``dry_run``: only check that)."""
    path = package / plant.file
    text = path.read_text(encoding="utf-8")
    if text.count(plant.old) != 1:
        raise ValueError(
            f"{plant.lab}: the text to replace occurs {text.count(plant.old)} times "
            f"in diffcourse/{plant.file}, not once: {plant.old!r}"
        )
    if not dry_run:
        path.write_text(text.replace(plant.old, plant.new), encoding="utf-8")


class Outcome(NamedTuple):
    caught: bool  # the lab stopped at one of its own asserts
    said: str  # that assert, or how the lab ended instead
    seconds: float


def check(plant: Plant, timeout: Optional[float] = None, cache: Optional[Path] = None) -> Outcome:
    """Run ``plant``'s lab against a planted copy of the package. A lab still running after
    ``timeout`` seconds is stopped and counts as not caught. ``cache``: the model cache the lab
    trains into (default: DIFFCOURSE_PLANTED_CACHE, else _build/.planted_cache)."""
    if cache is None:
        cache = os.environ.get("DIFFCOURSE_PLANTED_CACHE") or ROOT / "_build" / ".planted_cache"
    if str(cache) != "off":
        cache = Path(cache).resolve()  # the lab runs in notebooks/
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(
            ROOT / "diffcourse",
            Path(tmp) / "diffcourse",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        apply(plant, Path(tmp) / "diffcourse")
        path = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, MPLBACKEND="Agg", DIFFCOURSE_CACHE=str(cache))
        env.pop("PYTHONOPTIMIZE", None)  # -O would strip every assert
        start = time.time()
        try:
            run = subprocess.run(
                [sys.executable, __file__, "--run-lab", str(ROOT / "notebooks" / plant.lab)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return Outcome(False, f"still running after {timeout:g} s", time.time() - start)
        seconds = time.time() - start
    said = [
        line[len("PLANTED: ") :] for line in run.stdout.splitlines() if line.startswith("PLANTED: ")
    ]
    if run.returncode == 3:
        return Outcome(True, said[-1], seconds)
    if run.returncode == 0:
        return Outcome(False, "every cell passed", seconds)
    tail = run.stderr.strip().splitlines()[-6:]
    return Outcome(False, "\n    ".join([*said[-1:], *tail]), seconds)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labs", nargs="*", help="run only the plants of labs starting so")
    parser.add_argument("--list", action="store_true", help="list the plants, run nothing")
    parser.add_argument("--quick", action="store_true", help="only the plants make test runs")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds a lab may run (default 900)"
    )
    parser.add_argument("--run-lab", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_lab:
        return _run_lab(args.run_lab)
    plants = [p for p in PLANTS if not args.labs or p.lab.startswith(tuple(args.labs))]
    plants = [p for p in plants if p.quick or not args.quick]
    if not plants:
        parser.error(f"no {'quick ' if args.quick else ''}plant for the labs {args.labs}")
    for plant in plants:  # every plant still matches the package, before any lab runs
        apply(plant, ROOT / "diffcourse", dry_run=True)
    missed = 0
    for plant in plants:
        print(
            f"{plant.lab}: {plant.what}\n    diffcourse/{plant.file}: {plant.old!r}\n"
            f"    -> {plant.new!r}",
            flush=True,
        )
        if args.list:
            continue
        caught, said, seconds = check(plant, args.timeout)
        missed += not caught
        print(f"    {'caught' if caught else 'NOT CAUGHT'} ({seconds:.0f} s): {said}", flush=True)
    if not args.list:
        print(f"{len(plants) - missed} of {len(plants)} planted errors caught by an assert")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
