"""JetStream streams and durable consumers, as data.

Processes create or update streams from these specs at start (idempotent), so the
bus layout lives in one place and in version control.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus_schemas import subjects

DAY_S = 86_400.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float  # 0 = forever
    max_bytes: int = -1  # -1 = unlimited
    duplicate_window_s: float = 120.0
    description: str = ""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer; the runner follows these numbers."""

    durable: str
    stream: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1024
    max_deliver: int = -1  # the server never gives up; the runner decides what is poison
    backoff_s: tuple[float, ...] = field(default=(1.0, 2.0, 5.0, 10.0, 30.0))  # nak delays
    batch: int = 64


AUDIO = StreamSpec(
    name="AUDIO",
    subjects=(subjects.AUDIO_ALL,),
    max_age_s=DAY_S,
    max_bytes=8 * 1024**3,
    duplicate_window_s=600.0,
    description="PCM chunks per source and channel",
)
EVENTS = StreamSpec(
    name="EVENTS",
    subjects=(subjects.PRED_ALL, subjects.SAMPLE_ALL, subjects.MIXER_ALL, subjects.HEALTH_ALL),
    max_age_s=90 * DAY_S,
    duplicate_window_s=600.0,
    description="predictions, samples, mixer commands, channel health",
)
CONTROL = StreamSpec(
    name="CONTROL",
    subjects=(subjects.CTL_ALL,),
    max_age_s=0.0,
    duplicate_window_s=600.0,
    description="configuration history: sources, live streams, rules, models, labels",
)
DLQ = StreamSpec(
    name="DLQ",
    subjects=(subjects.DLQ_ALL,),
    max_age_s=30 * DAY_S,
    max_bytes=1024**3,  # a flood of bad messages cannot fill the disk: the oldest go first
    description="messages that could not be decoded or handled, with the reason",
)

ALL_STREAMS: tuple[StreamSpec, ...] = (AUDIO, EVENTS, CONTROL, DLQ)

# Headers a dead letter carries besides the original ones.
DLQ_REASON = "Tidzam-Dlq-Reason"
DLQ_SUBJECT = "Tidzam-Dlq-Subject"
DLQ_STREAM_SEQ = "Tidzam-Dlq-Stream-Seq"
DLQ_CONSUMER = "Tidzam-Dlq-Consumer"


CLASSIFIER_DURABLE_PREFIX = "classifier-"
# The newest chunk of every live session is held (one or two each, more with an audio
# expert's look-ahead) besides the batches in hand. Past half of this the classifier
# reads successors from the stream itself, a request per held channel and tick: at
# 1,024, 512 channels did (NATS and classifier CPU per audio second x4,
# `benchmarks/throughput.py --channels 512`).
CLASSIFIER_MAX_ACK_PENDING = 4096


def classifier_consumer(model_id: str) -> ConsumerSpec:
    """One durable per model: instances of the same model share the work."""
    return ConsumerSpec(
        durable=f"{CLASSIFIER_DURABLE_PREFIX}{model_id}",
        stream=AUDIO.name,
        filter_subjects=(subjects.AUDIO_ALL,),
        ack_wait_s=30.0,
        max_ack_pending=CLASSIFIER_MAX_ACK_PENDING,
        batch=32,
    )


def projection_consumer(name: str, stream: StreamSpec, filters: tuple[str, ...]) -> ConsumerSpec:
    """Projections apply in stream order: one batch in flight at a time, retried in
    the projector until committed; the durable restarts after the checkpoint."""
    return ConsumerSpec(
        durable=f"projection-{name}-{stream.name.lower()}",
        stream=stream.name,
        filter_subjects=filters,
        ack_wait_s=60.0,
        max_ack_pending=500,
        backoff_s=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
        batch=500,
    )


# ------------------------------------------------------------- every durable

# The projector's read models, and the streams and subjects they follow.
PROJECTION = "main"
PROJECTION_SUBSCRIPTIONS: tuple[tuple[StreamSpec, tuple[str, ...]], ...] = (
    (EVENTS, (subjects.PRED_ALL, subjects.HEALTH_ALL, subjects.SAMPLE_ALL, subjects.MIXER_ALL)),
    (CONTROL, (subjects.CTL_ALL,)),
)

# Whole audio for the archive: large batches, one slow disk write may take a while.
ARCHIVER = ConsumerSpec(durable="archiver", stream=AUDIO.name,
                        filter_subjects=(subjects.AUDIO_ALL,), ack_wait_s=60.0,
                        max_ack_pending=4096, batch=256, backoff_s=(0.5,))
ICECAST_RELAY = ConsumerSpec(durable="icecast-relay", stream=AUDIO.name,
                             filter_subjects=(subjects.AUDIO_ALL,), ack_wait_s=30.0,
                             max_ack_pending=1024, batch=64)
JACK_OUTPUT = ConsumerSpec(durable="jack-output", stream=AUDIO.name,
                           filter_subjects=(subjects.AUDIO_ALL,), ack_wait_s=30.0,
                           max_ack_pending=1024, batch=64)
# Predictions → samples: one window at a time, a read of the AUDIO stream for each sample.
EXTRACTOR = ConsumerSpec(durable="extractor", stream=EVENTS.name,
                         filter_subjects=(subjects.PRED_ALL,), ack_wait_s=60.0,
                         max_ack_pending=1024, batch=128, backoff_s=(2.0,))
# Health and predictions → automatic mixer commands (small events, large batches).
GAIN_CONTROLLER = ConsumerSpec(durable="gain-controller", stream=EVENTS.name,
                               filter_subjects=(subjects.HEALTH_ALL, subjects.PRED_ALL),
                               ack_wait_s=30.0, max_ack_pending=4096, batch=256,
                               backoff_s=(1.0,))


def privacy_predictions(of: str) -> ConsumerSpec:
    """Predictions → a privacy gate (``consumers.privacy``) of consumer ``of``: which
    windows of its audio are speech. Re-created at each start, acked at once."""
    return ConsumerSpec(durable=f"{of}-privacy", stream=EVENTS.name,
                        filter_subjects=(subjects.PRED_ALL,), ack_wait_s=30.0,
                        max_ack_pending=4096, batch=256, backoff_s=(1.0,))


SOURCE_MANAGER = ConsumerSpec(durable="source-manager", stream=CONTROL.name,
                              filter_subjects=(subjects.SOURCE_ALL,), ack_wait_s=30.0,
                              max_ack_pending=1000, max_deliver=-1, backoff_s=(1.0, 5.0),
                              batch=200)


def pipeline_durables(model_id: str) -> list[tuple[str, str]]:
    """(stream, durable) of the classifier of ``model_id``, then of the projections
    that follow it: what must be drained for a replay to be in SQL."""
    durables = [(AUDIO.name, classifier_consumer(model_id).durable)]
    durables += [(spec.name, projection_consumer(PROJECTION, spec, filters).durable)
                 for spec, filters in PROJECTION_SUBSCRIPTIONS]
    return durables



# ------------------------------------------------------------- outbound sinks

# Predictions → a webhook (``consumers.sinks.webhook``): one POST per fetched batch,
# acked after a 2xx answer; a receiver that is down is retried with an exponential
# backoff capped at a minute, for ever (nothing is dropped while it is away).
SINK_WEBHOOK = ConsumerSpec(durable="sink-webhook", stream=EVENTS.name,
                            filter_subjects=(subjects.PRED_ALL,), ack_wait_s=60.0,
                            max_ack_pending=4096, batch=64,
                            backoff_s=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0))
# Predictions and channel health → MQTT (``consumers.sinks.mqtt``, Home Assistant):
# acked once the broker acknowledged each publish (QoS 1); the same capped backoff.
SINK_MQTT = ConsumerSpec(durable="sink-mqtt", stream=EVENTS.name,
                         filter_subjects=(subjects.PRED_ALL, subjects.HEALTH_ALL),
                         ack_wait_s=30.0, max_ack_pending=4096, batch=256,
                         backoff_s=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0))
