"""One family of argument checks, used by every public function of the package.

The rule, the same in every module:

- **TypeError** when an argument has the wrong *type*: a string, a list, ``None`` or a bool where a
  number or a tensor is needed (``True`` is not a scale), a float where an int is needed, a tensor
  of the wrong kind of dtype (float labels, integer data), or a dtype that differs from the one the
  model or mixture was built in. A tensor's dtype is part of its type, so every dtype mismatch is
  a TypeError.
- **ValueError** when the type is right and the value is not: out of range, NaN, or infinite where
  that means nothing, a wrong shape, a tensor on another device than the one it must share. A
  device is where a value lives, not what it is, so every device mismatch is a ValueError.

Every message starts with the name of the parameter at fault.

Checks that must read a tensor's values back to the host (the range of the steps ``t`` or of the
labels ``y``) go through :func:`read_values`. On a GPU each such read waits for the device, so a
sampler lets them run at the first call of a run only (see :class:`SamplingRun`): the later calls
of the same run have the same labels and steps no larger than the first, and skip them. Checks of
types, shapes, dtypes and devices read no values and always run.
"""

from __future__ import annotations

import contextvars
import math
import numbers
import zipfile
from collections import abc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch

# ---- numbers ------------------------------------------------------------------------------------


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'<' if high_open else '<='} {high}"


def check_real(
    value,
    name: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float: a real number (not a bool), never NaN, finite unless ``finite=False``,
    within [low, high] (an end excluded where ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(
            f"{name} must be {_range_text(low, high, low_open, high_open)}, got {value}"
        )
    return value


def check_int(value, name: str, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an int (not a bool, not a float, even a whole one), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(
            f"{name} must be an int {_range_text(low, high, False, False)}, got {value}"
        )
    return value


def check_probability(value, name: str) -> float:
    """A real number in [0, 1]."""
    return check_real(value, name, low=0.0, high=1.0)


def check_choice(value, name: str, choices: Sequence) -> object:
    """One of ``choices`` (compared with ==): a ValueError lists them, or a TypeError where every
    choice is of one type and ``value`` is not (a number where a name is asked for)."""
    if value not in choices:
        kinds = {type(c) for c in choices}
        if len(kinds) == 1 and not isinstance(value, tuple(kinds)):
            raise TypeError(
                f"{name} must be a {kinds.pop().__name__}, one of {tuple(choices)}, "
                f"got {type(value).__name__}"
            )
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """True or False, nothing else: a flag given "no" or 0 would otherwise read as on or off."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_callable(value, name: str):
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def _sequence(values, name: str, what: str, empty: bool = False) -> Sequence:
    """A sequence, non-empty unless ``empty``: a list, a tuple, a range or a 1-D tensor (as a
    list), not a str."""
    if isinstance(values, torch.Tensor):
        values = values.tolist() if values.ndim == 1 else values
    if isinstance(values, (str, bytes)) or not isinstance(values, abc.Sequence):
        raise TypeError(f"{name} must be a sequence of {what}, got {type(values).__name__}")
    if not values and not empty:
        raise ValueError(f"{name} must hold at least one value")
    return values


def check_sequence(values, name: str, what: str, empty: bool = False) -> list:
    """A sequence of ``what`` (a list, a tuple, a range or a 1-D tensor), not a str, non-empty
    unless ``empty``; returned as a list."""
    return list(_sequence(values, name, what, empty=empty))


def check_mapping(value, name: str, what: str, item: str, kind: type = abc.Mapping):
    """A non-empty mapping of ``kind``: a TypeError names ``what`` it must be, a ValueError the
    ``item`` it must hold at least one of (an empty table is a wrong value, not a wrong type)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {what}, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must hold at least one {item}")
    return value


def check_name(value, name: str) -> str:
    """A non-empty str (a name, a key, a prefix): a TypeError for another type, a ValueError for
    the empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_reals(values, name: str, **limits) -> list:
    """A non-empty sequence (a list, a tuple, a 1-D tensor) of real numbers, each checked by
    :func:`check_real` with ``limits``; returned as a list of floats."""
    values = _sequence(values, name, "real numbers")
    return [check_real(v, f"{name}[{i}]", **limits) for i, v in enumerate(values)]


def check_ints(values, name: str, **limits) -> list:
    """A non-empty sequence of ints, each checked by :func:`check_int` with ``limits``
    (``values[i]`` named in the message); returned as a list."""
    values = _sequence(values, name, "ints")
    return [check_int(v, f"{name}[{i}]", **limits) for i, v in enumerate(values)]


def check_strs(values, name: str, empty: bool = True) -> list:
    """A sequence of str (names, captions, row labels), empty only if ``empty``; returned as a
    list."""
    values = _sequence(values, name, "str", empty=empty)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}")
    return list(values)


def check_span(pair, name: str) -> Tuple[float, float]:
    """An interval (low, high): two real numbers with low < high."""
    if isinstance(pair, (str, bytes)) or not isinstance(pair, abc.Sequence) or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (low, high) of real numbers, got {pair!r}")
    low, high = check_reals(pair, name)
    if not low < high:
        raise ValueError(f"{name} must have low < high, got {tuple(pair)}")
    return low, high


# ---- tensors ------------------------------------------------------------------------------------


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same, reading ``cuda`` (no index) as the current ``cuda:i``."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def _shape_text(shape: Sequence) -> str:
    return "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"


def check_tensor(
    value,
    name: str,
    *,
    floating: Optional[bool] = None,
    dtype: Optional[torch.dtype] = None,
    shape: Optional[Sequence] = None,
    ndim: Optional[int] = None,
    device: Optional[torch.device] = None,
    owner: str = "the model",
    nonempty: bool = False,
) -> torch.Tensor:
    """A tensor, with the checks asked for: ``floating`` (True: a float dtype, False: an integer
    one), ``dtype`` (exactly that dtype: the owner's), ``shape`` (a sequence of sizes, ``None`` for
    a free size), ``ndim``, ``device`` (the owner's), ``nonempty`` (at least one sample along the
    first dimension: a mean or a share of nothing is NaN). ``owner`` names whose dtype and device
    these are in the messages ("the model", "the mixture"). Reads no values."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if floating is False and (
        value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
    ):
        raise TypeError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if shape is not None:
        if value.ndim != len(shape) or any(
            s is not None and s != v for s, v in zip(shape, value.shape)
        ):
            raise ValueError(
                f"{name} must have shape {_shape_text(shape)}, got {tuple(value.shape)}"
            )
    if nonempty and (value.ndim == 0 or len(value) == 0):
        raise ValueError(f"{name} must hold at least one sample")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype}, but {owner} is {dtype}; convert one of them"
        )
    if device is not None and not same_device(value.device, device):
        raise ValueError(
            f"{name} is on {value.device}, but {owner} is on {device}; move one of them"
        )
    return value


def check_same(
    a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, *, dtype: bool = True
) -> None:
    """Two tensors of one shape, dtype and device (the two halves of a guidance rule); with
    ``dtype=False`` their dtypes may differ (float32 and float64 promote, as an exact predictor of a
    float64 mixture meets float32 samples)."""
    check_tensor(a, name_a)
    check_tensor(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape"
        )
    if dtype and a.dtype != b.dtype:
        raise TypeError(f"{name_a} ({a.dtype}) and {name_b} ({b.dtype}) must have the same dtype")
    if not same_device(a.device, b.device):
        raise ValueError(
            f"{name_a} ({a.device}) and {name_b} ({b.device}) must be on the same device"
        )


def check_float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """torch.float32 or torch.float64: the dtypes a Gaussian mixture is built in (its Cholesky
    factors and densities need the precision; float16 fails as "not positive definite")."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def check_device(device, name: str = "device") -> Optional[torch.device]:
    """None, or a device torch knows and this machine has ("cuda" without a GPU is a ValueError)."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} must be a device such as 'cpu' or 'cuda', got {device!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(device)!r}, but this machine has no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={str(device)!r}, but this machine has no MPS device")
    return device


def check_built_for(schedule, **models) -> None:
    """Networks that embed t were built for one schedule length (their ``T``): a shorter schedule
    would run every step at the wrong noise level with no error (a longer one fails at its first
    step). A model without ``T`` is not checked."""
    check_schedule(schedule)
    for name, model in models.items():
        built = getattr(model, "T", None)
        if built is not None and built != schedule.T:
            raise ValueError(f"schedule has T={schedule.T} but the {name} was built for T={built}")


def check_generator(
    generator, name: str = "generator", device: Optional[torch.device] = None
) -> Optional[torch.Generator]:
    """None or a ``torch.Generator`` (a NumPy generator or a seed is a TypeError); with ``device``,
    one that draws there (torch cannot draw a tensor on one device from a generator on another)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and device is not None and not same_device(generator.device, device):
        raise ValueError(
            f"{name} is on {generator.device}, but it draws noise for tensors on {device}; make it "
            f"with torch.Generator(device=...) on their device"
        )
    return generator


def check_alike(**tensors: Optional[torch.Tensor]) -> None:
    """Tensors that enter one formula together (None: not given): each of a floating dtype (an
    integer one would be truncated), each of the first's shape and on its device, so that a stray
    [N, 1] never broadcasts into a plausible answer. Their dtypes may differ (float32 and float64
    promote, as an exact predictor of a float64 mixture meets float32 samples)."""
    given = [(name, value) for name, value in tensors.items() if value is not None]
    for name, value in given:
        check_tensor(value, name, floating=True)
    (first, a), *rest = given
    for name, value in rest:
        check_same(a, value, first, name, dtype=False)


def check_schedule(schedule, name: str = "schedule"):
    """A :class:`~diffcourse.schedules.Schedule`."""
    from .schedules import Schedule

    if not isinstance(schedule, Schedule):
        raise TypeError(f"{name} must be a diffcourse Schedule, got {type(schedule).__name__}")
    return schedule


def check_levels(schedule, steps, name: str = "steps") -> list:
    """0-based steps of ``schedule`` as Python ints in 0..T-1: a non-empty sequence (a list, a range,
    a 1-D tensor), not a single int."""
    check_schedule(schedule)
    if (
        isinstance(steps, (str, bytes))
        or not hasattr(steps, "__iter__")
        or (isinstance(steps, torch.Tensor) and steps.ndim != 1)
    ):
        what = (
            f"a {steps.ndim}-D tensor" if isinstance(steps, torch.Tensor) else type(steps).__name__
        )
        raise TypeError(f"{name} must be a sequence of ints, got {what}")
    steps = steps.tolist() if isinstance(steps, torch.Tensor) else list(steps)
    if not steps:
        raise ValueError(f"{name} must hold at least one step")
    return [check_int(s, name, low=0, high=schedule.T - 1) for s in steps]


def check_mixture(mixture, name: str = "mixture"):
    """A :class:`~diffcourse.mixture.GaussianMixture`."""
    from .mixture import GaussianMixture

    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"{name} must be a GaussianMixture, got {type(mixture).__name__}")
    return mixture


def check_module(model, name: str = "model") -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


# ---- values on the device: read once per sampling run -------------------------------------------


class SamplingRun:
    """The state a sampler shares with the checks during one run (see :func:`sampling_run`).

    ``first`` is True during the run's first call of ``eps_fn``: the value checks run then, and
    are skipped at every later call, whose labels are the same and whose steps are no larger.
    ``step`` and ``t`` are the current step as a Python int and the very tensor the sampler passed
    for it, so that code that needs the step on the host (the exact mixture, guidance on an
    interval) can have it without reading ``t`` back from the device: :func:`known_step`."""

    def __init__(self) -> None:
        self.first = True
        self.step: Optional[int] = None
        self.t: Optional[torch.Tensor] = None

    @contextmanager
    def at(self, step: int, t: torch.Tensor) -> Iterator[None]:
        """Around one call of ``eps_fn`` at ``step`` (every row of ``t`` equal to it)."""
        self.step, self.t = step, t
        try:
            yield
        finally:
            self.first = False
            self.step, self.t = None, None


_RUN: contextvars.ContextVar[Optional[SamplingRun]] = contextvars.ContextVar(
    "diffcourse_run", default=None
)


@contextmanager
def sampling_run() -> Iterator[SamplingRun]:
    """Used by the samplers around a whole run: a new :class:`SamplingRun`, current until it ends."""
    run = SamplingRun()
    token = _RUN.set(run)
    try:
        yield run
    finally:
        _RUN.reset(token)


def current_run() -> Optional[SamplingRun]:
    """The sampling run in progress, or None outside a sampler (APG uses it to drop its momentum
    when a new run starts)."""
    return _RUN.get()


def values_checked_already() -> bool:
    """True at the later calls of a sampling run, where value checks that read the device are skipped."""
    run = _RUN.get()
    return run is not None and not run.first


def known_step(t: torch.Tensor) -> Optional[int]:
    """The step every row of ``t`` holds, as a Python int, when a sampler passed this very tensor
    in the current call; None otherwise (then read ``t`` itself)."""
    run = _RUN.get()
    if run is not None and run.t is not None and t is run.t:
        return run.step
    return None


def read_values(x: torch.Tensor) -> list:
    """``x.tolist()``: the one place where a check reads a tensor back to the host (on a GPU this
    waits for the device). Tests count its calls."""
    return x.tolist()


def _extrema(x: torch.Tensor):
    """(min, max) of a non-empty tensor, in one read; None where no values can be read (meta)."""
    if x.device.type == "meta":
        return None
    lo, hi = torch.aminmax(x)
    return read_values(torch.stack([lo, hi]))


def check_steps(t, n: int, T: int, name: str = "t") -> torch.Tensor:
    """``t`` as a LongTensor[n] of 0-based steps in 0..T-1. The range is read from the device only
    where :func:`values_checked_already` is False."""
    check_tensor(t, name)
    if t.dtype != torch.long:
        raise TypeError(f"{name} must be a LongTensor of 0-based steps, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    return check_step_range(t, T, name)


def check_step_range(t: torch.Tensor, T: int, name: str = "t", built_for: str = "") -> torch.Tensor:
    """Every step of ``t`` in 0..T-1: from the sampler's step where it passed this ``t``
    (:func:`known_step`), else read from the device where :func:`values_checked_already` is False.
    ``built_for`` names what has T steps (the schedule a guidance rule was built with), for the
    message."""
    if not t.numel():
        return t
    step = known_step(t)
    if step is not None:
        ext = [step, step]
    elif values_checked_already():
        return t
    else:
        ext = _extrema(t)
    if ext is not None and (ext[0] < 0 or ext[1] >= T):
        where = f" ({built_for} has T={T} steps)" if built_for else ""
        raise ValueError(f"{name} must lie in 0..{T - 1}{where}, got values in {ext[0]}..{ext[1]}")
    return t


def check_alpha_bar(
    alpha_bar, name: str = "alpha_bar", *, zero: bool = True, one: bool = True
) -> object:
    """A noise level alpha_bar in [0, 1], as a real number or a floating-point tensor, with 0
    excluded where ``zero`` is False (a formula divides by sqrt(alpha_bar)) and 1 where ``one`` is
    False (it divides by 1 - alpha_bar). A tensor's range is read from the device where
    :func:`values_checked_already` is False (once per sampling run)."""
    if not isinstance(alpha_bar, torch.Tensor):
        return check_real(alpha_bar, name, low=0, high=1, low_open=not zero, high_open=not one)
    if not alpha_bar.is_floating_point():
        raise TypeError(
            f"{name} must be a real number or a floating-point tensor, got dtype {alpha_bar.dtype}"
        )
    if alpha_bar.numel() and not values_checked_already():
        ext = _extrema(alpha_bar)
        if ext is not None:
            lo, hi = ext
            bad = not (lo >= 0 and hi <= 1) or (not zero and lo <= 0) or (not one and hi >= 1)
            if bad:  # NaN fails every comparison, so it lands here too
                ends = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
                raise ValueError(f"{name} must lie in {ends}, got values in {lo}..{hi}")
    return alpha_bar


def check_labels(
    y,
    n: int,
    num_classes: int,
    device: Optional[torch.device] = None,
    *,
    allow_null: bool = False,
    allow_int: bool = False,
    name: str = "y",
) -> torch.Tensor:
    """Class labels as a LongTensor[n] on ``device``, each in 0..C-1, or also C (the null label)
    where ``allow_null``. ``None`` means the null label for every row (where allowed). With
    ``allow_int`` (the mixtures) a Python int or an integer tensor of any integer dtype, or 0-dim,
    stands for all rows; without it (the networks) only a LongTensor[n] on ``device`` is taken."""
    if y is None and allow_null:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    integer = isinstance(y, torch.Tensor) and not (
        y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
    )
    if allow_int and isinstance(y, numbers.Integral) and not isinstance(y, bool):
        top = num_classes if allow_null else num_classes - 1
        if not 0 <= int(y) <= top:
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got {int(y)}")
        return torch.full((n,), int(y), dtype=torch.long, device=device)
    elif allow_int and integer:
        if y.ndim == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"{name} must be an int or have shape ({n},), got {tuple(y.shape)}")
        y = y.to(device=device, dtype=torch.long)
    elif not (integer and y.dtype == torch.long):
        what = "an int or an integer tensor" if allow_int else "a LongTensor"
        got = f"dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name} must be {what} of labels, got {got}")
    if not allow_int:
        if y.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
        if device is not None and not same_device(y.device, device):
            raise ValueError(f"{name} is on {y.device}, but the model is on {device}")
    if n and not values_checked_already():
        top = num_classes if allow_null else num_classes - 1
        ext = _extrema(y)
        if ext is not None and (ext[0] < 0 or ext[1] > top):
            null = f", or be the null label {num_classes}" if allow_null else ""
            raise ValueError(
                f"{name} must lie in 0..{num_classes - 1}{null}, got values in {ext[0]}..{ext[1]}"
            )
    return y


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """No NaN or infinite entry (reads the device once)."""
    if x.device.type != "meta" and not read_values(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


# ---- files ----------------------------------------------------------------------------------------


def check_archive(path: Union[str, Path], what: str) -> None:
    """``torch.save`` writes a zip archive with a CRC-32 checksum per member: read them all, so a
    file with a flipped bit inside a tensor is refused instead of loading wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{what} is corrupt or truncated ({_first_line(err)})") from None
    if bad is not None:
        raise ValueError(f"{what} is corrupt: its part {bad!r} fails its checksum")


def _first_line(err: BaseException) -> str:
    """The first line of an error's message, without torch's advice on ``weights_only``."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if "weights_only" not in text else type(err).__name__
