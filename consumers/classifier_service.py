"""The classifier process: ``python -m consumers.classifier_service``.

Instances of the same model share one durable consumer: start more of them to
classify more channels; every window is still predicted once.

Which version of the model: the CONTROL stream decides. At start the process
reads the ``ModelDeployed`` history of its model id and loads the newest
deployed folder that loads (``TIDZAM_MODEL_DIR`` only when none does, or none
was ever deployed); it then follows new deploys live (an ordered consumer on
``tidzam.ctl.model.<id>``): ``ModelFollower`` loads each in a worker thread while
windows keep flowing, and swaps it in between two batches (``Classifier.swap``).
A deploy whose folder does not load, names another version than its folder, or
changes the window length or rate is refused with an error in the log; the
running model stays. A restart picks the refused-for-windowing model up.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus_schemas import DecodeError, ModelDeployed, decode
from bus_schemas import subjects as subj
from bus_schemas.streams import CONTROL, classifier_consumer
from consumers.classifier import Classifier, ModelRefused
from consumers.process import run_process
from consumers.runner import ConsumerRunner
from learning.inference import TfliteModel
from learning.modelfolder import ModelFolder
from producers.bus import connect, ensure_streams
from producers.publisher import Publisher

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "selector"


class ClassifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDZAM_", extra="ignore")

    nats_url: SecretStr
    model_dir: Path = DEFAULT_MODEL  # the model id, and the version when none is deployed
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    batch: int = Field(32, ge=1, le=1024)
    threads: int = Field(1, ge=1, le=64)


# ------------------------------------------------------------------ history


def deploy_subject(model_id: str | None) -> str:
    """Where ``ModelDeployed`` events of a model (all models: None) are published."""
    # bus_schemas.subjects spells it for an event (subject_for); this is its filter.
    return f"{subj.PREFIX}.ctl.model.{model_id}" if model_id else f"{subj.PREFIX}.ctl.model.>"


async def read_deployments(js: JetStreamContext, model_id: str | None = None
                           ) -> tuple[list[tuple[int, ModelDeployed]], int]:
    """Every ``ModelDeployed`` in CONTROL for ``model_id`` (None: every model) in stream
    order with its stream sequence, and the last sequence read (0: none). Deploys are
    few: one direct get per event, no consumer left behind."""
    found: list[tuple[int, ModelDeployed]] = []
    seq = 0
    subject = deploy_subject(model_id)
    while True:
        try:
            raw = await js.get_msg(CONTROL.name, seq=seq + 1, subject=subject, next=True)
        except NotFoundError:
            return found, seq
        seq = raw.seq if raw.seq else seq + 1
        try:
            event = decode(raw.headers, raw.data or b"")
        except DecodeError as exc:
            log.warning("CONTROL seq %d on %s is unreadable (%s): skipped", seq, raw.subject,
                        exc.reason)
            continue
        if isinstance(event, ModelDeployed):
            found.append((seq, event))


def deployed_folder(event: ModelDeployed) -> ModelFolder:
    """The folder of a deploy, checked; raises ValueError (ModelFolderError and
    IncompatibleFeatures are ValueErrors) or OSError if it cannot serve it."""
    folder = ModelFolder.load(event.path)
    meta = folder.meta
    if (meta.model_id, meta.version) != (event.model_id, event.model_version):
        raise ValueError(f"{event.path} holds {meta.model_id}@{meta.version}, not "
                         f"{event.model_id}@{event.model_version}")
    return folder


def load_deployed(event: ModelDeployed, num_threads: int) -> TfliteModel:
    """Worker thread: the scorer of a deploy (same errors as ``deployed_folder``)."""
    return TfliteModel(deployed_folder(event), num_threads=num_threads)


async def initial_scorer(history: list[tuple[int, ModelDeployed]], fallback: Path,
                         num_threads: int) -> TfliteModel:
    """The newest deploy that loads, else the fallback folder."""
    for seq, event in reversed(history):
        try:
            return await asyncio.to_thread(load_deployed, event, num_threads)
        except (ValueError, OSError) as exc:
            log.error("deployed %s@%s (CONTROL seq %d) cannot be loaded: %s; trying the "
                      "deploy before it", event.model_id, event.model_version, seq, exc)
    if history:
        log.error("no deployed version of %s loads: using %s", history[-1][1].model_id,
                  fallback)
    return await asyncio.to_thread(TfliteModel, fallback, num_threads)


# ----------------------------------------------------------------- following


class ModelFollower:
    """Keeps a running classifier on the version deployed for its model."""

    def __init__(self, classifier: Classifier, *, num_threads: int = 1,
                 after_seq: int = 0) -> None:
        self.classifier = classifier
        self.num_threads = num_threads
        self.last_seq = after_seq  # CONTROL sequence of the last deploy handled
        self.switches = 0
        self.refusals: list[str] = []
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self, js: JetStreamContext) -> None:
        """Follow deploys stored after ``after_seq`` (ordered consumer: it re-creates
        itself after a reconnect, from where it was)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=self.last_seq + 1)
        model_id = self.classifier.scorer.model_id
        self._sub = await js.subscribe(deploy_subject(model_id), stream=CONTROL.name,
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
        """Load a deploy off the event loop and swap it in; False if refused or
        already running. Never raises for a bad deploy: the old model stays."""
        running = self.classifier.scorer
        spec = f"{event.model_id}@{event.model_version}"
        loaded = getattr(running, "folder", None)  # a TfliteModel's ModelFolder
        same_path = loaded is not None and Path(event.path) == Path(loaded.path)
        if event.model_version == running.version and same_path:
            log.info("deploy of %s (CONTROL seq %d): already running it", spec, seq)
            return False
        try:
            folder = await asyncio.to_thread(deployed_folder, event)
            refusal = self.classifier.refusal(folder.meta.model_id, folder.params)
            if refusal is not None:  # before the TFLite file: the clearest reason
                raise ModelRefused(refusal)
            scorer = await asyncio.to_thread(TfliteModel, folder, self.num_threads)
            previous = self.classifier.swap(scorer)
        except (ValueError, OSError) as exc:  # ModelRefused is a ValueError
            kind = "refused" if isinstance(exc, ModelRefused) else "cannot be loaded"
            reason = f"deploy of {spec} from {event.path} {kind}: {exc}"
            self.refusals.append(reason)
            log.error("%s; keeping %s@%s", reason, running.model_id, running.version)
            return False
        self.switches += 1
        log.info("switched %s@%s → %s (CONTROL seq %d, %s): the next batch uses it",
                 previous.model_id, previous.version, spec, seq, event.path)
        return True


# ------------------------------------------------------------------- process


async def run(settings: ClassifierSettings, stop: asyncio.Event) -> None:
    model_id = ModelFolder.load(settings.model_dir).meta.model_id
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-classifier")
    js = nc.jetstream()
    await ensure_streams(js)
    history, last_seq = await read_deployments(js, model_id)
    scorer = await initial_scorer(history, settings.model_dir, settings.threads)
    classifier = Classifier(nc, scorer, Publisher(js), overlap=settings.overlap)
    follower = ModelFollower(classifier, num_threads=settings.threads, after_seq=last_seq)
    await follower.start(js)
    spec = classifier_consumer(scorer.model_id)
    spec = type(spec)(**{**spec.__dict__, "batch": settings.batch})
    log.info("classifier %s@%s running (hop %d samples; %d deploy(s) in the history)",
             scorer.model_id, scorer.version, classifier.hop, len(history))
    try:
        await ConsumerRunner(nc, spec, classifier.handle).run(stop)
    finally:
        await follower.stop()
    await nc.drain()
    log.info("classifier drained after %d chunks, %d windows: exiting",
             classifier.stats.chunks, classifier.stats.windows)


def main() -> None:
    settings = ClassifierSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
