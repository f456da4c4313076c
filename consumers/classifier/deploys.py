"""Which model versions a classifier runs, and following new deploys live.

The CONTROL stream decides: at start, the newest deployed folder of the selector
and of each expert that loads (``initial_scorer``, ``expert_folders``); then every
``ModelDeployed`` as it lands (``ModelFollower``): loaded off the event loop, built
into a new cascade (``build_cascade``) and swapped in between two batches
(``Classifier.swap``). A deploy names an id@version of the classifier's own registry
and carries its sha256 (``deployed_folder``): a folder outside the registry or files
that changed are never loaded. A deploy that cannot serve is refused with the reason
in the log; the running cascade stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus_schemas import DecodeError, ModelDeployed, decode
from bus_schemas import subjects as subj
from bus_schemas.streams import CONTROL
from consumers.classifier.classifier import Classifier, ModelRefused
from inference.cascade import (
    DEFAULT_GATE,
    AudioExpert,
    Candidate,
    Cascade,
    Expert,
    candidate,
    plan_experts,
)
from inference.loading import FolderModel, load_model
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import ModelRegistry, RegistryError, content_digest

log = logging.getLogger(__name__)


# What a folder that cannot serve raises: ModelFolderError (not a ValueError), a
# ValueError (IncompatibleFeatures, a version mismatch, a TFLite file LiteRT
# refuses, ModelRefused), RuntimeError from LiteRT, OSError.
LOAD_ERRORS = (ModelFolderError, ValueError, RuntimeError, OSError)


def deployed_folder(event: ModelDeployed, registry: ModelRegistry) -> ModelFolder:
    """The folder a deploy may switch to: the id@version of this classifier's own
    registry whose files have the digest the deploy carries, never a path the event
    names (anyone who can publish on the bus could name any folder). Raises one of
    ``LOAD_ERRORS``: ``ModelRefused`` when the registry has no such version or its
    files differ."""
    spec = f"{event.model_id}@{event.model_version}"
    if not event.sha256:
        raise ModelRefused(f"the deploy of {spec} carries no sha256 (an older Tidzam "
                           "published it): deploy it again")
    try:
        entry = registry.resolve(spec)
    except RegistryError as exc:
        raise ModelRefused(f"{spec} is not in this classifier's registry: {exc}") from exc
    if entry.folder is None:
        raise ModelFolderError(f"{entry.path}: {entry.problem}")
    digest = content_digest(entry.folder)
    if digest != event.sha256:
        raise ModelRefused(f"the registry's {spec} ({entry.path}) has sha256 {digest}, the "
                           f"deploy names {event.sha256}: its files are not the ones deployed")
    return entry.folder


def load_deployed(event: ModelDeployed, registry: ModelRegistry,
                  num_threads: int) -> FolderModel:
    """Worker thread: the scorer of a deploy (raises one of ``LOAD_ERRORS``)."""
    return load_model(deployed_folder(event, registry), num_threads=num_threads)


async def initial_scorer(history: list[tuple[int, ModelDeployed]], registry: ModelRegistry,
                         fallback: Path, num_threads: int) -> FolderModel:
    """The newest deploy that loads, else the fallback folder."""
    for seq, event in reversed(history):
        try:
            return await asyncio.to_thread(load_deployed, event, registry, num_threads)
        except LOAD_ERRORS as exc:
            log.error("deployed %s@%s (CONTROL seq %d) cannot be loaded: %s; trying the "
                      "deploy before it", event.model_id, event.model_version, seq, exc)
    if history:
        log.error("no deployed version of %s loads: using %s", history[-1][1].model_id,
                  fallback)
    return await asyncio.to_thread(load_model, fallback, num_threads)


# ------------------------------------------------------------------ experts


def expert_folders(history: Sequence[tuple[int, ModelDeployed]], registry: ModelRegistry,
                   selector_id: str) -> dict[str, ModelFolder]:
    """The folder each model other than the selector would bring to a cascade: its
    newest deploy whose folder loads, else its newest valid registry version.
    Whether it joins is ``plan_experts``' business. Worker thread (reads files)."""
    deployed: dict[str, list[tuple[int, ModelDeployed]]] = {}
    for seq, event in history:
        deployed.setdefault(event.model_id, []).append((seq, event))
    newest: dict[str, ModelFolder] = {}  # entries come in semantic-version order
    for entry in registry.entries():
        if entry.folder is not None:
            newest[entry.model_id] = entry.folder
    chosen: dict[str, ModelFolder] = {}
    for model_id in sorted((set(deployed) | set(newest)) - {selector_id}):
        for seq, event in reversed(deployed.get(model_id, [])):
            try:
                chosen[model_id] = deployed_folder(event, registry)
                break
            except LOAD_ERRORS as exc:
                log.error("deployed %s@%s (CONTROL seq %d) cannot be loaded: %s", model_id,
                          event.model_version, seq, exc)
        if model_id not in chosen and model_id in newest:
            chosen[model_id] = newest[model_id]
    return chosen


def _candidate(folder: ModelFolder) -> Candidate:
    meta = folder.meta
    return Candidate(f"{meta.model_id}@{meta.version}", folder.labels, folder.params)


def _plan(selector: Expert, folders: Mapping[str, ModelFolder],
          builtin: Mapping[str, AudioExpert] | None = None
          ) -> tuple[tuple[str, ...], Mapping[str, str]]:
    """Which experts join: the folders' and the built-in ones (which win an id)."""
    candidates = {k: _candidate(f) for k, f in folders.items()}
    candidates.update({k: candidate(e) for k, e in (builtin or {}).items()})
    plan = plan_experts(f"{selector.model_id}@{selector.version}", selector.labels,
                        selector.features, candidates)
    return plan.order, plan.problems


def _shadowed(folders: Mapping[str, ModelFolder], builtin: Mapping[str, AudioExpert]
              ) -> list[str]:
    """Why the folders of ids a built-in expert serves are not used."""
    return [f"expert {k}@{f.meta.version} ({f.path}) is not used: {k} is "
            f"{builtin[k].model_id}@{builtin[k].version}, built in (TIDZAM_BIRDNET=1)"
            for k, f in sorted(folders.items()) if k in builtin]


async def build_cascade(selector: Expert, folders: Mapping[str, ModelFolder], gate: float,
                        num_threads: int, loaded: MutableMapping[Path, FolderModel],
                        builtin: Mapping[str, AudioExpert] | None = None
                        ) -> tuple[Cascade, list[str]]:
    """The cascade of ``selector``, the expert ``folders`` (id → folder) and the
    ``builtin`` experts (BirdNET; they win over a folder of the same id) that join
    it, and why the others that would have joined do not (features, labels, a
    TFLite file that does not load, a built-in expert). ``loaded`` (folder path →
    model) is reused and filled: an expert is loaded once, off the event loop."""
    builtin = builtin or {}
    excluded: set[str] = set(builtin)
    problems: list[str] = _shadowed(folders, builtin)
    while True:
        order, plan_problems = _plan(selector, {k: f for k, f in folders.items()
                                                if k not in excluded}, builtin)
        experts: dict[str, Expert | AudioExpert] = {}
        for model_id in order:
            if model_id in builtin:
                experts[model_id] = builtin[model_id]
                continue
            folder = folders[model_id]
            model = loaded.get(folder.path)
            if model is None or model.version != folder.meta.version:
                try:
                    model = await asyncio.to_thread(load_model, folder, num_threads)
                except LOAD_ERRORS as exc:
                    problems.append(f"expert {model_id}@{folder.meta.version} ({folder.path}) "
                                    f"cannot be loaded: {exc}")
                    excluded.add(model_id)
                    break  # its children may hang from it: plan again without it
                loaded[folder.path] = model
            experts[model_id] = model
        else:
            problems.extend(plan_problems.values())
            return Cascade(selector, experts, gate), problems


# ----------------------------------------------------------------- following


class ModelFollower:
    """Keeps a running classifier on the deployed versions of its selector and its
    experts (``candidates``: expert id → the folder it uses, joined or not)."""

    def __init__(self, classifier: Classifier, registry: ModelRegistry, *, num_threads: int = 1,
                 after_seq: int = 0, gate: float | None = None,
                 candidates: Mapping[str, ModelFolder] | None = None,
                 loaded: MutableMapping[Path, FolderModel] | None = None,
                 builtin: Mapping[str, AudioExpert] | None = None) -> None:
        self.classifier = classifier
        self.registry = registry  # deploys switch only to its versions, digest checked
        self.builtin: Mapping[str, AudioExpert] = builtin or {}  # BirdNET: never deployed
        running = classifier.scorer
        self.selector: Expert = running.selector if isinstance(running, Cascade) else running
        self.gate = gate if gate is not None else (
            running.gate if isinstance(running, Cascade) else DEFAULT_GATE)
        running_experts = [e for e in (running.experts.values() if isinstance(running, Cascade)
                                       else ()) if isinstance(e, FolderModel)]
        # the experts running now stay candidates unless ``candidates`` says otherwise
        self.candidates: dict[str, ModelFolder] = {
            **{e.model_id: e.folder for e in running_experts}, **(candidates or {})}
        self._loaded: MutableMapping[Path, FolderModel] = loaded if loaded is not None else {}
        for expert in running_experts:
            self._loaded.setdefault(expert.folder.path, expert)
        self.num_threads = num_threads
        self.last_seq = after_seq  # CONTROL sequence of the last deploy handled
        self.switches = 0
        self.refusals: list[str] = []
        self.left_out: list[str] = []  # experts a new selector could not keep
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self, js: JetStreamContext) -> None:
        """Follow the deploys of every model stored after ``after_seq`` (ordered
        consumer: it re-creates itself after a reconnect, from where it was)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=self.last_seq + 1)
        self._sub = await js.subscribe(subj.model_deployed(None), stream=CONTROL.name,
                                       cb=self._on_msg, ordered_consumer=True, config=config)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing down: nothing left to protect
                log.debug("unsubscribing from deploys: %s", exc)

    async def _on_msg(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return  # an ordered consumer re-created from an earlier point
        self.last_seq = seq
        try:
            event = decode(msg.headers, msg.data)
        except DecodeError as exc:
            log.error("CONTROL seq %d on %s is unreadable (%s): ignored", seq, msg.subject,
                      exc.reason)
            return
        if isinstance(event, ModelDeployed):
            await self.apply(event, seq)

    async def apply(self, event: ModelDeployed, seq: int = 0) -> bool:
        """Load a deploy (of the selector or of an expert) off the event loop and swap
        the cascade it makes in; False if refused, already running or not part of
        this cascade. Never raises for a bad deploy: the running cascade stays."""
        if event.model_id == self.selector.model_id:
            return await self._apply_selector(event, seq)
        return await self._apply_expert(event, seq)

    def _refuse(self, event: ModelDeployed, exc: Exception) -> bool:
        kind = "refused" if isinstance(exc, ModelRefused) else "cannot be loaded"
        reason = f"deploy of {event.model_id}@{event.model_version} from {event.path} {kind}: {exc}"
        self.refusals.append(reason)
        running = self.classifier.scorer
        log.error("%s; keeping %s@%s", reason, running.model_id, running.version)
        return False

    async def _apply_selector(self, event: ModelDeployed, seq: int) -> bool:
        spec = f"{event.model_id}@{event.model_version}"
        selector = self.selector
        loaded = selector.folder if isinstance(selector, FolderModel) else None
        try:
            folder = await asyncio.to_thread(deployed_folder, event, self.registry)
            if (loaded is not None and folder.meta.version == selector.version
                    and Path(folder.path) == Path(loaded.path)):
                log.info("deploy of %s (CONTROL seq %d): already running it", spec, seq)
                return False
            refusal = self.classifier.refusal(folder.meta.model_id, folder.params)
            if refusal is not None:  # before the TFLite file: the clearest reason
                raise ModelRefused(refusal)
            scorer = await asyncio.to_thread(load_model, folder, self.num_threads)
            cascade, problems = await build_cascade(scorer, self.candidates, self.gate,
                                                    self.num_threads, self._loaded, self.builtin)
            self.classifier.swap(cascade)
        except LOAD_ERRORS as exc:
            return self._refuse(event, exc)
        for problem in problems:
            log.error("%s: left out of the cascade of %s", problem, spec)
        self.left_out.extend(problems)
        self.selector = scorer
        self._switched(cascade)
        log.info("switched %s@%s → %s (CONTROL seq %d, %s): the next batch uses it "
                 "(cascade %s, version %s)", selector.model_id, selector.version, spec, seq,
                 folder.path, cascade.describe(), cascade.version)
        return True

    async def _apply_expert(self, event: ModelDeployed, seq: int) -> bool:
        spec = f"{event.model_id}@{event.model_version}"
        served = self.builtin.get(event.model_id)
        if served is not None:
            return self._refuse(event, ModelRefused(
                f"{event.model_id} is {served.model_id}@{served.version}, built in "
                f"(TIDZAM_BIRDNET=1): unset TIDZAM_BIRDNET to deploy {event.model_id} models"))
        current = self.candidates.get(event.model_id)
        try:
            folder = await asyncio.to_thread(deployed_folder, event, self.registry)
        except LOAD_ERRORS as exc:
            return self._refuse(event, exc)
        if (current is not None and current.meta.version == folder.meta.version
                and Path(current.path) == Path(folder.path)):
            log.info("deploy of %s (CONTROL seq %d): already using it", spec, seq)
            return False
        trial = {**self.candidates, event.model_id: folder}
        order, problems = _plan(self.selector, trial, self.builtin)
        if event.model_id in problems:
            return self._refuse(event, ModelRefused(problems[event.model_id]))
        if event.model_id not in order:
            self.candidates = trial  # a later selector may have its class
            log.info("deploy of %s (CONTROL seq %d): no class %r in the cascade of %s@%s, "
                     "so it does not run (kept for a selector that has it)", spec, seq,
                     event.model_id, self.selector.model_id, self.selector.version)
            return False
        try:
            cascade, failures = await build_cascade(self.selector, trial, self.gate,
                                                    self.num_threads, self._loaded, self.builtin)
            if event.model_id not in cascade.experts:
                raise ValueError(next((f for f in failures if f.startswith(f"expert {spec}")),
                                      "it does not load"))
            previous = self.classifier.scorer
            self.classifier.swap(cascade)
        except LOAD_ERRORS as exc:
            return self._refuse(event, exc)
        self.candidates = trial
        self._switched(cascade)
        was = f"{current.meta.model_id}@{current.meta.version}" if current else "no expert"
        log.info("switched %s → %s (CONTROL seq %d, %s): the next batch uses it "
                 "(cascade %s, version %s, was %s)", was, spec, seq, folder.path,
                 cascade.describe(), cascade.version, previous.version)
        return True

    def _switched(self, cascade: Cascade) -> None:
        self.switches += 1
        in_use = {e.folder.path for e in cascade.experts.values() if isinstance(e, FolderModel)}
        for path in [p for p in self._loaded if p not in in_use]:
            del self._loaded[path]  # the previous batch holds its own reference
