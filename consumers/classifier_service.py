"""The classifier process: ``python -m consumers.classifier_service``.

Instances of the same model share one durable consumer: start more of them to
classify more channels; every window is still predicted once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus_schemas.streams import classifier_consumer
from consumers.classifier import Classifier
from consumers.process import run_process
from consumers.runner import ConsumerRunner
from learning.inference import TfliteModel
from producers.bus import connect, ensure_streams
from producers.publisher import Publisher

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "selector"


class ClassifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDZAM_", extra="ignore")

    nats_url: SecretStr
    model_dir: Path = DEFAULT_MODEL
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    batch: int = Field(32, ge=1, le=1024)
    threads: int = Field(1, ge=1, le=64)


async def run(settings: ClassifierSettings, stop: asyncio.Event) -> None:
    scorer = TfliteModel(settings.model_dir, num_threads=settings.threads)
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-classifier")
    await ensure_streams(nc.jetstream())
    classifier = Classifier(nc, scorer, Publisher(nc.jetstream()), overlap=settings.overlap)
    spec = classifier_consumer(scorer.model_id)
    spec = type(spec)(**{**spec.__dict__, "batch": settings.batch})
    log.info("classifier %s@%s running (hop %d samples)", scorer.model_id, scorer.version,
             classifier.hop)
    await ConsumerRunner(nc, spec, classifier.handle).run(stop)
    await nc.drain()
    log.info("classifier drained after %d chunks, %d windows: exiting",
             classifier.stats.chunks, classifier.stats.windows)


def main() -> None:
    settings = ClassifierSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
