"""``GET /metrics``: the pipeline's health in Prometheus' text format (a read token, as a
bearer token in the scrape configuration, unless reads are public).

- ``tidzam_consumer_pending`` / ``_unacked`` / ``_redelivered``: per durable consumer of
  every stream, what waits for it (its lag), what it holds, what came again;
- ``tidzam_dlq_messages``: dead letters kept;
- ``tidzam_windows_total``: windows this gateway has seen classified since it started (a
  counter: ``rate()`` of it is the windows/s);
- ``tidzam_channel_rms_dbfs``, ``tidzam_channel_dead``: each channel's newest health
  interval of the last five minutes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from bus_schemas.streams import DLQ

if TYPE_CHECKING:
    from projections.gateway.app import Gateway

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HEALTH = """
SELECT DISTINCT ON (source, channel) source, channel, rms_dbfs, dead
  FROM channel_health WHERE time > now() - interval '5 minutes'
 ORDER BY source, channel, time DESC
"""


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Families of samples, written out in the exposition format."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, object], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def collect(gateway: Gateway) -> str:
    js = gateway._nc.jetstream()
    consumers: list[tuple[dict[str, object], Any]] = []
    dlq = 0
    for stream in await js.streams_info():
        name = stream.config.name or ""
        if name == DLQ.name:
            dlq = int(stream.state.messages or 0)
        for info in await js.consumers_info(name):
            consumers.append(({"stream": name, "consumer": info.name}, info))
    m = Metrics()
    m.family("tidzam_consumer_pending", "gauge", "messages waiting for the consumer",
             [(labels, float(i.num_pending or 0)) for labels, i in consumers])
    m.family("tidzam_consumer_unacked", "gauge", "messages delivered, not yet acked",
             [(labels, float(i.num_ack_pending or 0)) for labels, i in consumers])
    m.family("tidzam_consumer_redelivered", "gauge", "messages delivered more than once",
             [(labels, float(i.num_redelivered or 0)) for labels, i in consumers])
    m.family("tidzam_dlq_messages", "gauge", "dead letters kept", [({}, float(dlq))])
    m.family("tidzam_windows_total", "counter",
             "windows classified, seen by this gateway since it started",
             [({}, float(gateway.windows_seen))])
    rows = await gateway.rows(_HEALTH)
    m.family("tidzam_channel_rms_dbfs", "gauge", "a channel's newest level (dBFS)",
             [({"source": r["source"], "channel": r["channel"]}, float(r["rms_dbfs"]))
              for r in rows])
    m.family("tidzam_channel_dead", "gauge", "1 if a channel's newest interval was dead",
             [({"source": r["source"], "channel": r["channel"]}, float(bool(r["dead"])))
              for r in rows])
    return m.text()


def register_metrics(gateway: Gateway, api: FastAPI, read: Any) -> None:
    @api.get("/metrics", dependencies=[read], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """The pipeline's health for Prometheus."""
        return PlainTextResponse(await collect(gateway), media_type=CONTENT_TYPE)
