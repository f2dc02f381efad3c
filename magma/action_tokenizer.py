"""Continuous robot actions <-> discrete action tokens (the OpenVLA / Magma convention).

Each action dimension is normalised per dataset with its 1st/99th percentiles to [-1, 1],
clipped, and cut into 256 bins. Bin b has one text form everywhere, `<act_b>` (what samples and
model answers hold), and one vocabulary id per checkpoint, set by its action-token scheme
(`ActionVocab`, recorded by `magma.tokenizer_setup` in the processor config):

    append      new tokens <act_0>..<act_255> at the end of the vocabulary: bin b -> start + b
    reuse_last  the last 256 ids of the base vocabulary, as OpenVLA and Magma do (their id is
                `vocab_size - digitize(a)`, so the lowest bin is the last id): bin b -> end - 1 - b

Which normalised values a bin holds and decodes to is the checkpoint's binning
(`ActionVocab.binning`, `action_binning` in the processor config; `values_to_bins` and
`bins_to_values` are its one implementation):

    uniform     256 equal bins of width 2/256 over [-1, 1]; bin b decodes to its centre
                -1 + (b + 0.5) * 2/256 (every checkpoint built here)
    openvla     the released OpenVLA / Magma-8B binning: the 256 edges `linspace(-1, 1, 256)`,
                b = digitize(a, edges) - 1 (in [0, 255]; 255 only for a = 1), decoded to the
                midpoint of edges b and b + 1, bin 255 decoding as bin 254 (the release's clip
                at 254). Under reuse_last that is the release's id `vocab_size - digitize(a)` and
                its decoding `centres[clip(vocab_size - id - 1, 0, 254)]`.

Statistics live in the checkpoint folder as `action_stats.json` ({dataset: stats}). A stats
`mask` (OpenVLA's `dataset_statistics.json` field of the same name) marks the dimensions that are
normalised (True); a False dimension, such as an absolute gripper command in [0, 1], is passed
through unnormalised (clipped to [-1, 1] for binning) and decoded as the bin value itself, as
OpenVLA / Magma train and un-normalise it. No mask: every dimension is normalised.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from magma.codecs import ParseError

N_ACTION_BINS = 256
ACTION_STATS_FILE = "action_stats.json"
ActionScheme = Literal["append", "reuse_last"]
ACTION_SCHEMES: tuple[str, ...] = ("append", "reuse_last")
ActionBinning = Literal["uniform", "openvla"]
ACTION_BINNINGS: tuple[str, ...] = ("uniform", "openvla")
ACTION_TEXT = re.compile(r"<act_(\d{1,3})>")  # the text form of one bin


def action_token(bin_index: int) -> str:
    return f"<act_{bin_index}>"


def _check_binning(binning: str) -> None:
    if binning not in ACTION_BINNINGS:
        raise ValueError(f"action binning {binning!r}: choose one of {ACTION_BINNINGS}")


def bin_width(n_bins: int = N_ACTION_BINS, binning: str = "uniform") -> float:
    """Width of one bin in normalised units: 2/n (uniform), the edge spacing 2/(n - 1) (openvla)."""
    _check_binning(binning)
    return 2.0 / (n_bins if binning == "uniform" else n_bins - 1)


def values_to_bins(normed: np.ndarray, n_bins: int = N_ACTION_BINS, binning: str = "uniform") -> np.ndarray:
    """Normalised values (clipped to [-1, 1] here) -> bins in [0, n_bins) (module docstring)."""
    _check_binning(binning)
    a = np.clip(np.asarray(normed, dtype=np.float64), -1.0, 1.0)
    if binning == "openvla":
        return np.digitize(a, np.linspace(-1.0, 1.0, n_bins)).astype(np.int64) - 1
    idx = np.floor((a + 1.0) / bin_width(n_bins)).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


def bins_to_values(bins: np.ndarray, n_bins: int = N_ACTION_BINS, binning: str = "uniform") -> np.ndarray:
    """Bins -> the normalised values they decode to (module docstring)."""
    _check_binning(binning)
    b = np.asarray(bins, dtype=np.int64)
    if binning == "openvla":
        edges = np.linspace(-1.0, 1.0, n_bins)
        centres = (edges[:-1] + edges[1:]) / 2.0
        return centres[np.clip(b, 0, n_bins - 2)]
    return -1.0 + (b + 0.5) * bin_width(n_bins)


@dataclass(frozen=True)
class ActionVocab:
    """A checkpoint's action tokens: which vocabulary ids the bins are (`range(start, start +
    n_bins)`, in the order of `scheme`) and which values they hold (`binning`); see the module
    docstring. The one place bins become ids and back."""

    scheme: str
    start: int
    n_bins: int = N_ACTION_BINS
    binning: str = "uniform"

    def __post_init__(self) -> None:
        if self.scheme not in ACTION_SCHEMES:
            raise ValueError(f"action-token scheme {self.scheme!r}: choose one of {ACTION_SCHEMES}")
        if self.start < 0 or self.n_bins < 1:
            raise ValueError(f"action ids start at {self.start} for {self.n_bins} bins: need start >= 0")
        _check_binning(self.binning)
        if self.binning == "openvla" and self.n_bins < 2:
            raise ValueError("openvla binning needs at least 2 bins (the edges of one interval)")

    @classmethod
    def at_end(cls, vocab_size: int, n_bins: int = N_ACTION_BINS, scheme: str = "append",
               binning: str = "uniform") -> "ActionVocab":
        """The bins on the last `n_bins` ids below `vocab_size`."""
        if vocab_size <= n_bins:
            raise ValueError(f"vocab_size {vocab_size} must exceed the {n_bins} action bins")
        return cls(scheme, vocab_size - n_bins, n_bins, binning)

    @property
    def end(self) -> int:
        """One past the last action id."""
        return self.start + self.n_bins

    @property
    def ids(self) -> range:
        return range(self.start, self.end)

    def bin_to_id(self, bins: np.ndarray | int) -> np.ndarray:
        b = np.asarray(bins, dtype=np.int64)
        return self.start + b if self.scheme == "append" else self.end - 1 - b

    def id_to_bin(self, ids: np.ndarray | int) -> np.ndarray:
        i = np.asarray(ids, dtype=np.int64)
        return i - self.start if self.scheme == "append" else self.end - 1 - i

    def is_action(self, ids: np.ndarray | int) -> np.ndarray:
        i = np.asarray(ids, dtype=np.int64)
        return (i >= self.start) & (i < self.end)

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Action ids -> `<act_b>...` (ValueError for an id outside the range)."""
        arr = np.asarray(list(ids), dtype=np.int64)
        if not self.is_action(arr).all():
            raise ValueError(f"token ids outside the action range [{self.start}, {self.end})")
        return "".join(action_token(int(b)) for b in self.id_to_bin(arr))

    def text_to_ids(self, text: str) -> list[int]:
        """`<act_b>...` (nothing else) -> ids (ValueError otherwise)."""
        found = ACTION_TEXT.findall(text)
        if not found or ACTION_TEXT.sub("", text):
            raise ValueError(f"expected only {action_token(0)}-style action tokens, got {text[:60]!r}")
        bins = np.asarray([int(f) for f in found])
        if (bins >= self.n_bins).any():
            raise ValueError(f"action bin outside [0, {self.n_bins}) in {text[:60]!r}")
        return [int(i) for i in self.bin_to_id(bins)]

    def to_dict(self) -> dict[str, object]:
        return {"scheme": self.scheme, "start": self.start, "n_bins": self.n_bins, "binning": self.binning}


@dataclass
class ActionStats:
    """Per-dimension statistics of one dataset's actions; `mask` (None: all True) says which
    dimensions are normalised with q01/q99 (module docstring)."""

    q01: list[float]
    q99: list[float]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    count: int
    mask: list[bool] | None = None

    def __post_init__(self) -> None:
        if self.mask is not None and len(self.mask) != len(self.q01):
            raise ValueError(f"action stats mask has {len(self.mask)} entries for {len(self.q01)} dimensions")

    @property
    def dim(self) -> int:
        return len(self.q01)

    @property
    def normalized(self) -> np.ndarray:
        """Boolean [D]: True where a dimension is normalised."""
        return np.ones(self.dim, dtype=bool) if self.mask is None else np.asarray(self.mask, dtype=bool)

    @classmethod
    def from_actions(cls, actions: np.ndarray, mask: Sequence[bool] | None = None) -> "ActionStats":
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"actions must be [N, D] with N > 0, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf; drop those steps before computing stats")

        def lst(x: np.ndarray) -> list[float]:
            return [float(v) for v in x]

        return cls(q01=lst(np.quantile(a, 0.01, axis=0)), q99=lst(np.quantile(a, 0.99, axis=0)),
                   mean=lst(a.mean(0)), std=lst(a.std(0)), min=lst(a.min(0)), max=lst(a.max(0)),
                   count=int(a.shape[0]), mask=None if mask is None else [bool(m) for m in mask])


def save_action_stats(stats: dict[str, ActionStats], folder: str | Path) -> Path:
    path = Path(folder) / ACTION_STATS_FILE
    path.write_text(json.dumps({k: asdict(v) for k, v in sorted(stats.items())}, indent=1))
    return path


def load_action_stats(folder_or_file: str | Path) -> dict[str, ActionStats]:
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / ACTION_STATS_FILE
    try:
        raw = json.loads(path.read_text())
        return {k: ActionStats(**v) for k, v in raw.items()}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a valid action statistics file ({exc})") from exc


class ActionTokenizer:
    """Maps actions of shape [H, D] (a chunk of H steps) to H*D token ids and back.

    `vocab`: the checkpoint's `ActionVocab` (its ids and binning), or an int `vocab_size` for the
    `append` layout on its last `n_bins` ids with uniform bins. The text form `render`/`parse`
    does not depend on the ids; it does on the binning."""

    def __init__(self, vocab: ActionVocab | int, stats: ActionStats, n_bins: int = N_ACTION_BINS):
        self.vocab = vocab if isinstance(vocab, ActionVocab) else ActionVocab.at_end(vocab, n_bins)
        self.n_bins = self.vocab.n_bins
        self.vocab_size = self.vocab.end  # one past the last action id
        self.first_id = self.vocab.start
        self.stats = stats
        # An unnormalised dimension (mask False) maps through [-1, 1] unchanged.
        keep = stats.normalized
        self._lo = np.where(keep, np.asarray(stats.q01, dtype=np.float64), -1.0)
        self._hi = np.where(keep, np.asarray(stats.q99, dtype=np.float64), 1.0)
        # A constant dimension (q01 == q99) would divide by zero: give it a unit range.
        span = self._hi - self._lo
        self._span = np.where(span > 1e-12, span, 1.0)

    @property
    def dim(self) -> int:
        return self.stats.dim

    @property
    def action_token_ids(self) -> range:
        return self.vocab.ids

    @property
    def binning(self) -> str:
        return self.vocab.binning

    @property
    def bin_width(self) -> float:
        """Width of one bin in normalised units ([-1, 1])."""
        return bin_width(self.n_bins, self.binning)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        return np.clip(2.0 * (a - self._lo) / self._span - 1.0, -1.0, 1.0)

    def unnormalize(self, normed: np.ndarray) -> np.ndarray:
        return (np.asarray(normed, dtype=np.float64) + 1.0) / 2.0 * self._span + self._lo

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        a = np.atleast_2d(np.asarray(actions, dtype=np.float64))
        if a.shape[-1] != self.dim:
            raise ValueError(f"action dim {a.shape[-1]} != statistics dim {self.dim}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        return values_to_bins(self.normalize(a), self.n_bins, self.binning)

    def from_bins(self, bins: np.ndarray) -> np.ndarray:
        return self.unnormalize(bins_to_values(bins, self.n_bins, self.binning))

    def encode(self, actions: np.ndarray) -> list[int]:
        """[H, D] (or [D]) actions -> H*D vocabulary ids, step-major."""
        return [int(i) for i in self.vocab.bin_to_id(self.to_bins(actions).reshape(-1))]

    def decode(self, token_ids: list[int] | np.ndarray) -> np.ndarray:
        """H*D vocabulary ids -> [H, D] actions (bin centres, un-normalised)."""
        ids = np.asarray(list(token_ids), dtype=np.int64)
        if ids.size == 0 or ids.size % self.dim:
            raise ValueError(f"{ids.size} action tokens is not a multiple of action dim {self.dim}")
        if not self.vocab.is_action(ids).all():
            raise ValueError("token ids outside the action range")
        return self.from_bins(self.vocab.id_to_bin(ids).reshape(-1, self.dim))

    # -- text form, used in samples and by the serving adapters

    def render(self, actions: np.ndarray) -> str:
        return "".join(action_token(int(b)) for b in self.to_bins(actions).reshape(-1))

    def parse(self, text: str, chunk: int | None = None) -> np.ndarray | ParseError:
        found = ACTION_TEXT.findall(text)
        rest = ACTION_TEXT.sub("", text).strip()
        if not found or rest:
            return ParseError("action_tokens", "expected only <act_N> tokens", text)
        bins = np.asarray([int(f) for f in found])
        if (bins >= self.n_bins).any():
            return ParseError("action_tokens", f"bin outside [0, {self.n_bins})", text)
        if bins.size % self.dim or (chunk is not None and bins.size != chunk * self.dim):
            want = f"{chunk} x {self.dim}" if chunk else f"a multiple of {self.dim}"
            return ParseError("action_tokens", f"got {bins.size} tokens, expected {want}", text)
        return self.from_bins(bins.reshape(-1, self.dim))

    def logits_mask(self, vocab_size: int | None = None) -> np.ndarray:
        """Boolean [vocab] mask, True on action ids: constrained decoding sets the rest to -inf."""
        mask = np.zeros(vocab_size or self.vocab.end, dtype=bool)
        mask[self.vocab.start:self.vocab.end] = True
        return mask

    def max_abs_error(self) -> np.ndarray:
        """Worst-case per-dimension decoding error for actions inside [q01, q99] ([-1, 1] for an
        unnormalised dimension): half a bin (openvla: bin 255, a = 1 exactly, decodes to bin 254's
        centre, also half a bin away)."""
        return self.bin_width / 2.0 * self._span / 2.0
