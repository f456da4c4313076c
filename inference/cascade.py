"""Hierarchical experts: a selector, then experts that refine its classes.

The cascade
-----------
A ``Cascade`` is a selector (one model, classes ``birds``, ``rain``, ``wind``…)
plus *experts*, each named after the class it refines: the expert ``birds`` (labels
``american_robin``, ``blue_jay``…) refines the selector's class ``birds``; an
expert named ``birds-american_robin`` (labels ``song``, ``call``) refines the
class ``birds-american_robin`` that the ``birds`` expert brings, and so on, as
deep as the names nest. The hierarchy is read from the ``-`` in class names, as
in the original Tidzam, so an expert's own labels may not contain ``-``.

Scores (``Cascade.predict``): one float32 matrix (N windows, len(labels)), the
columns in ``Cascade.labels`` order: the selector's labels, then each expert's
labels prefixed with the class it refines (``birds-american_robin``), experts in
depth-first order of their parent label (stable for a given set of models). A
child's score is its parent's score × the expert's score, recursively
(``birds-american_robin-song`` = birds × american_robin × song). With softmax
experts a family's children sum to their parent; a child never exceeds it.

Gate: an expert runs only on the windows where its parent's score (already
multiplied down the tree) is ≥ ``gate`` (within ``SCORE_EPS``, the float32
tolerance the decision uses too); on the others its labels score 0 and
it costs nothing. Default ``DEFAULT_GATE`` = 0.3 (``TIDZAM_EXPERT_GATE`` in the
classifier): at most three classes of a softmax selector reach 0.3 in one
window, so each window runs at most three experts per level; and as long as
the gate is not above the decision threshold (0.5), every class that can be
decided is refined: gating saves compute without changing any decision. Between
the gate and the threshold the scores still carry an expert's split of a parent
too uncertain to decide, for whoever re-thresholds the stored vectors later.

Features are computed once per window for the whole cascade, so every expert
must use exactly the selector's feature parameters (``CascadeError`` otherwise,
naming the parameters that differ). One exception: under a selector whose features
are the window's samples (``wave-v1``, the YAMNet-based selector), a log-mel expert
at the same rate hears the middle of the window (``hears_middle``): its log-mel is
computed there, for the gated rows only.

Audio experts (``AudioExpert``, e.g. BirdNET in ``inference.birdnet``) do not take
the log-mel window: they listen to ``RawAudio.context_samples`` of raw audio
around it, at the selector's sample rate (a different rate cannot join). The
caller hands ``predict`` a ``WindowAudio`` that cuts those contexts for the
gated rows only (the classifier assembles them from the chunks around each
window, ``inference.contexts``); without it, a cascade with an audio expert
refuses to predict rather than leave its classes at 0. ``context_samples``
says how much audio around a window the cascade needs (0: none).

Softmax and sigmoid experts: a softmax expert splits its parent (its children
sum to it); an expert of independent sigmoids (BirdNET: one yes/no per species)
does not: two species singing in the same seconds can both score near their
parent, and the children of a window need not sum to anything. Either way a
child is ≤ its parent, and the decision below stays sensible: a child replaces
its parent only if it passes the threshold AND leads every sibling by the
margin, so two species at once leave the decision at the parent (``birds``)
while both scores stay in the vector for whoever reads it.

Decision (``decide_hierarchical``), in the spirit of the original:
1. among the top-level labels (the selector's; any label none of whose ``-``
   prefixes is itself a label), take the best; it is accepted if its score is
   ≥ ``threshold`` and beats every label unrelated to it (not its descendant)
   by ≥ ``margin``; else the decision is ``unknown``;
2. refine: among the accepted label's children take the best; it replaces the
   label if it is ≥ ``threshold`` and beats its siblings (and their
   descendants) by ≥ ``margin``; repeat down the tree.
The result is the one deepest accepted label, e.g. ``("birds-american_robin",)``:
a detection with that label. Without experts (and without ``-`` nesting in the
labels) this is exactly ``inference.scoring.decide``; a ``Cascade`` without
experts calls ``decide`` itself, so a selector alone behaves as it always did.
The thresholds are the selector's (its ``model.json`` ``decision``); those in
an expert's folder are not used.

Version: a prediction names the whole cascade in ``model_version``
(``cascade_version``): the selector's version, then ``+<expert id>.<version>``
for every expert in expert-id order, e.g. ``1.0.0+birds.1.2.0+rain.1.0.0``; the
selector's version alone when there is no expert. Should that exceed the 64
characters ``Prediction.model_version`` allows, it becomes
``<selector version>+<n>experts.<12 hex digits of its SHA-256>``: still one
string per cascade (two classifier instances with the same models agree), and
the classifier logs the full form when it loads the cascade. Give experts plain
versions: a ``+build`` suffix of their own would make the string ambiguous to
read back.

No TensorFlow here: numpy and the LiteRT ``TfliteModel``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bus_schemas.errors import TidzamError
from inference.features import WAVE_KIND, FeatureParams, window_features
from inference.modelfolder import Decision, ModelFolder
from inference.scoring import SCORE_EPS, UNKNOWN, Model, Named, decide

F32 = npt.NDArray[np.float32]

SEP = "-"  # class path separator: "birds-american_robin" refines "birds"
DEFAULT_GATE = 0.3
DEFAULT_DECISION = Decision(threshold=0.5, margin=0.1)  # the built-in selector's
MAX_VERSION_LEN = 64  # bus_schemas.Prediction.model_version


class CascadeError(TidzamError, ValueError):
    """An expert that cannot join a cascade: other feature parameters, a label
    with ``-``, a class that clashes, or no class of the cascade to refine."""


Expert = Model  # a feature expert: any loaded model (``inference.scoring.Model``)


@dataclass(frozen=True)
class RawAudio:
    """What an audio expert listens to: ``context_samples`` of raw mono audio at
    ``sample_rate`` around each window (float32 in [-1, 1])."""

    sample_rate: int
    context_samples: int


class WindowAudio(Protocol):
    """The raw audio around the windows of a batch, cut on demand (only the rows an
    audio expert runs on are ever cut)."""

    def contexts(self, rows: npt.NDArray[np.intp], samples: int) -> F32:
        """float32 (len(rows), samples), mono at the selector's rate: row ``k`` is the
        ``samples`` around window ``rows[k]`` of the batch (centred on it where the
        audio allows; see ``inference.contexts``)."""
        ...

    def start_ns(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
        """UTC start (ns) of each of those windows, int64 (len(rows),)."""
        ...


@runtime_checkable
class AudioExpert(Named, Protocol):
    """An expert that hears raw audio around a window instead of its log-mel
    features (``inference.birdnet.BirdNetExpert`` is one)."""

    @property
    def audio(self) -> RawAudio: ...

    def predict_audio(self, audio: F32, start_ns: npt.NDArray[np.int64]) -> F32:
        """audio float32 (N, audio.context_samples) at audio.sample_rate; start_ns
        int64 (N,): each window's UTC start → scores float32 (N, len(labels)) in [0, 1]."""
        ...


AnyExpert = Expert | AudioExpert


def child_label(parent: str, label: str) -> str:
    """The cascade label of an expert's ``label`` under the class ``parent``."""
    return f"{parent}{SEP}{label}"


# ------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Candidate:
    """What planning needs to know of an expert: no TFLite loaded."""

    spec: str  # "birds@1.2.0", for messages
    labels: tuple[str, ...]
    features: FeatureParams | RawAudio  # its input: log-mel windows, or raw audio


def candidate(expert: AnyExpert) -> Candidate:
    """What planning needs to know of a loaded expert."""
    heard = expert.audio if isinstance(expert, AudioExpert) else expert.features
    return Candidate(f"{expert.model_id}@{expert.version}", expert.labels, heard)


@dataclass(frozen=True)
class ExpertPlan:
    """Which candidate experts join a cascade.

    ``order``: the experts that attach, by id (= the class each refines), in
    evaluation order (depth-first, a parent's expert before its children's);
    ``problems``: id → why it cannot join (its descendants are then unreachable
    and simply absent from ``order``). Candidates in neither refine no class of
    this cascade."""

    order: tuple[str, ...]
    problems: Mapping[str, str]
    labels: tuple[str, ...]  # the cascade's labels, selector's first


def plan_experts(selector_spec: str, selector_labels: Sequence[str], features: FeatureParams,
                 candidates: Mapping[str, Candidate]) -> ExpertPlan:
    """Attach the candidates (id → candidate) under the selector's labels, as deep
    as their ids nest; see ``ExpertPlan``."""
    order: list[str] = []
    problems: dict[str, str] = {}
    labels = list(selector_labels)
    taken = set(labels)

    def visit(level: Sequence[str]) -> None:
        for label in level:
            cand = candidates.get(label)
            if cand is None:
                continue
            problem = _problem(cand, selector_spec, features, label, taken)
            if problem is not None:
                problems[label] = problem
                continue
            order.append(label)
            added = [child_label(label, x) for x in cand.labels]
            labels.extend(added)
            taken.update(added)
            visit(added)

    visit(list(selector_labels))
    return ExpertPlan(tuple(order), problems, tuple(labels))


def _problem(cand: Candidate, selector_spec: str, features: FeatureParams, parent: str,
             taken: set[str]) -> str | None:
    if not cand.labels:
        return f"expert {cand.spec} has no labels"
    if isinstance(cand.features, RawAudio):
        if cand.features.sample_rate != features.sample_rate:
            return (f"expert {cand.spec} listens to audio at {cand.features.sample_rate} Hz "
                    f"where the selector {selector_spec} runs at {features.sample_rate} Hz")
    elif hears_middle(features, cand.features):
        pass  # the cascade cuts its log-mel window out of the middle of the selector's
    elif cand.features != features:
        differ = _differences(cand.features, features)
        return (f"expert {cand.spec} computes its features with {differ} where the "
                f"selector {selector_spec} does not: an expert must use "
                "the selector's feature parameters (the cascade computes them once per "
                "window); retrain it on them")
    nested = [x for x in cand.labels if SEP in x]
    if nested:
        return (f"expert {cand.spec} has labels with {SEP!r} ({', '.join(nested)}): {SEP!r} "
                "nests classes in a cascade; rename them (e.g. with '_')")
    clash = [child_label(parent, x) for x in cand.labels if child_label(parent, x) in taken]
    if clash:
        return (f"expert {cand.spec} would add classes the cascade already has "
                f"({', '.join(clash)})")
    return None


def hears_middle(selector: FeatureParams, expert: FeatureParams) -> bool:
    """Whether a log-mel expert joins a ``wave-v1`` selector (the YAMNet-based one) by
    hearing the middle of its window: same rate, a window no longer."""
    return (selector.kind == WAVE_KIND and expert.kind != WAVE_KIND
            and expert.sample_rate == selector.sample_rate
            and expert.window_samples <= selector.window_samples)


def _expert_input(features: F32, selector: FeatureParams, expert: FeatureParams) -> F32:
    """The rows' features as an expert takes them: the selector's own, or under a
    ``wave-v1`` selector the log-mel of the middle of each window (``hears_middle``)."""
    if expert == selector:
        return features
    first = (selector.window_samples - expert.window_samples) // 2
    middle = np.ascontiguousarray(features[:, first:first + expert.window_samples])
    return window_features(middle, expert)


def _differences(mine: FeatureParams, theirs: FeatureParams) -> str:
    return ", ".join(f"{f.name} {getattr(mine, f.name)!r} (selector {getattr(theirs, f.name)!r})"
                     for f in fields(FeatureParams)
                     if getattr(mine, f.name) != getattr(theirs, f.name))


def cascade_version(selector_version: str, experts: Mapping[str, str]) -> str:
    """``model_version`` of a cascade: selector version + ``+<id>.<version>`` per
    expert (id order); a digest form beyond ``MAX_VERSION_LEN`` (module docstring)."""
    if not experts:
        return selector_version
    full = selector_version + "".join(f"+{i}.{experts[i]}" for i in sorted(experts))
    if len(full) <= MAX_VERSION_LEN:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    short = f"{selector_version}+{len(experts)}experts.{digest}"
    if len(short) > MAX_VERSION_LEN:
        raise CascadeError(f"selector version {selector_version!r} is too long to name a "
                           f"cascade in {MAX_VERSION_LEN} characters")
    return short


# ------------------------------------------------------------------- cascade


@dataclass(frozen=True)
class _Node:
    expert: AnyExpert
    parent: int  # column of the class it refines
    start: int  # its columns: start .. start + len(expert.labels)


class Cascade:
    """A selector and its experts, usable wherever one model is (``predict``,
    ``decide``, ``labels``, ``version``…); see the module docstring.

    ``experts``: class path → the expert refining it (its ``model_id`` must be
    that path). ``decision``: thresholds of ``decide``; default the selector's
    folder's for a loaded model folder, else ``DEFAULT_DECISION``. Raises
    CascadeError for an expert that cannot join (every reason at once)."""

    def __init__(self, selector: Expert, experts: Mapping[str, AnyExpert],
                 gate: float = DEFAULT_GATE, decision: Decision | None = None) -> None:
        if not 0.0 <= gate <= 1.0:
            raise ValueError(f"the expert gate must be in [0, 1], got {gate}")
        spec = f"{selector.model_id}@{selector.version}"
        wrong = [f"experts[{k!r}] is model {e.model_id}" for k, e in experts.items()
                 if e.model_id != k]
        if wrong:
            raise CascadeError("an expert's model id must be the class it refines: "
                               + "; ".join(wrong))
        plan = plan_experts(spec, selector.labels, selector.features,
                            {k: candidate(e) for k, e in experts.items()})
        reasons = list(plan.problems.values()) + [
            f"expert {k} refines no class of the cascade (no label {k!r})"
            for k in experts if k not in plan.order and k not in plan.problems]
        if reasons:
            raise CascadeError("; ".join(reasons))
        self.selector = selector
        self.experts: Mapping[str, AnyExpert] = {k: experts[k] for k in plan.order}
        self.gate = gate
        folder = getattr(selector, "folder", None)  # a loaded model folder's own rule
        self.decision = decision or (folder.meta.decision if isinstance(folder, ModelFolder)
                                     else DEFAULT_DECISION)
        self._labels = plan.labels
        column = {label: i for i, label in enumerate(plan.labels)}
        self._nodes = tuple(_Node(experts[k], column[k],
                                  column[child_label(k, experts[k].labels[0])])
                            for k in plan.order)
        self._version = cascade_version(selector.version,
                                        {k: e.version for k, e in self.experts.items()})

    @classmethod
    def single(cls, selector: Expert) -> Cascade:
        """A cascade of the selector alone (behaves exactly as the selector)."""
        return cls(selector, {})

    @property
    def model_id(self) -> str:
        return self.selector.model_id

    @property
    def version(self) -> str:
        """The whole cascade's version (``cascade_version``)."""
        return self._version

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def features(self) -> FeatureParams:
        return self.selector.features

    @property
    def context_samples(self) -> int:
        """The most raw audio around a window any audio expert hears (0: none does,
        ``predict`` needs no ``audio``)."""
        return max((e.audio.context_samples for e in self.experts.values()
                    if isinstance(e, AudioExpert)), default=0)

    def describe(self) -> str:
        """``selector@1.0.0 + birds@1.2.0 + …``: every model with its own version."""
        return " + ".join(f"{m.model_id}@{m.version}"
                          for m in (self.selector, *self.experts.values()))

    def predict(self, features: F32, audio: WindowAudio | None = None) -> F32:
        """Scores of a batch: features float32 (N, frames, mels) of the selector's
        parameters → float32 (N, len(labels)), children = parent × expert, experts
        run only on the rows whose parent score is ≥ the gate. ``audio``: the raw
        audio around the same N windows, required when ``context_samples`` > 0."""
        if audio is None and self.context_samples:
            heard = [k for k, e in self.experts.items() if isinstance(e, AudioExpert)]
            raise CascadeError(f"expert(s) {', '.join(heard)} listen to the raw audio around "
                               "each window: pass it to predict (audio=...)")
        root = self.selector.predict(features)
        out = np.zeros((root.shape[0], len(self._labels)), dtype=np.float32)
        out[:, :root.shape[1]] = root
        for node in self._nodes:
            parent = out[:, node.parent]
            rows = np.flatnonzero(parent >= self.gate - SCORE_EPS)
            if rows.size == 0:
                continue
            expert = node.expert
            if isinstance(expert, AudioExpert):
                assert audio is not None  # checked above
                scores = expert.predict_audio(
                    audio.contexts(rows, expert.audio.context_samples), audio.start_ns(rows))
            else:
                scores = expert.predict(_expert_input(features[rows], self.features,
                                                      expert.features))
            stop = node.start + len(expert.labels)
            out[rows, node.start:stop] = parent[rows, None] * scores
        return out

    def decide(self, scores: F32) -> tuple[str, ...]:
        """The decision for one score vector (len(labels),): ``decide`` without
        experts, ``decide_hierarchical`` with them."""
        d = self.decision
        if not self.experts:
            return decide(scores, self._labels, d.threshold, d.margin)
        return decide_hierarchical(self._labels, scores, d.threshold, d.margin)


# ------------------------------------------------------------------ decision


@dataclass(frozen=True)
class _Tree:
    roots: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    subtree: tuple[tuple[int, ...], ...]  # a label and all its descendants


@functools.lru_cache(maxsize=64)
def _tree(labels: tuple[str, ...]) -> _Tree:
    """The hierarchy of ``labels`` by name: a label's parent is its longest proper
    ``-`` prefix that is itself a label (none: a top-level label)."""
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError("labels must be unique to form a hierarchy")
    parent: list[int | None] = []
    for label in labels:
        head, found = label, None
        while found is None and SEP in head:
            head = head.rsplit(SEP, 1)[0]
            found = index.get(head)
        parent.append(found)
    children: list[list[int]] = [[] for _ in labels]
    for i, p in enumerate(parent):
        if p is not None:
            children[p].append(i)

    def below(i: int) -> tuple[int, ...]:
        return (i, *(j for c in children[i] for j in below(c)))

    return _Tree(tuple(i for i, p in enumerate(parent) if p is None),
                 tuple(tuple(c) for c in children),
                 tuple(below(i) for i in range(len(labels))))


def decide_hierarchical(labels: Sequence[str], scores: F32 | Sequence[float], threshold: float,
                        margin: float) -> tuple[str, ...]:
    """The deepest label that wins its level (module docstring, "Decision"), or
    ``("unknown",)``. ``scores``: one window, shape (len(labels),)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(labels) == 0 or s.shape[0] != len(labels):
        raise ValueError(f"{s.shape[0]} scores for {len(labels)} labels")
    if not np.all(np.isfinite(s)):
        return (UNKNOWN,)
    tree = _tree(tuple(labels))
    chosen = _winner(s, tree.roots, tree, threshold, margin)
    if chosen is None:
        return (UNKNOWN,)
    while tree.children[chosen]:
        child = _winner(s, tree.children[chosen], tree, threshold, margin)
        if child is None:
            break
        chosen = child
    return (labels[chosen],)


def _winner(s: npt.NDArray[np.float64], rivals: Sequence[int], tree: _Tree, threshold: float,
            margin: float) -> int | None:
    """The best of ``rivals`` if it passes ``threshold`` and beats the others and
    their descendants by ``margin`` (one alone: against 0)."""
    best = rivals[int(np.argmax(s[list(rivals)]))]
    others = [j for r in rivals if r != best for j in tree.subtree[r]]
    runner_up = float(np.max(s[others])) if others else 0.0
    if s[best] >= threshold - SCORE_EPS and s[best] - runner_up >= margin - SCORE_EPS:
        return best
    return None
