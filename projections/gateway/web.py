"""The web dashboard, served by the gateway from ``web/`` (plain ES modules, every asset
here: field sites have no internet), and the reads only it needs: spectrograms computed
on the server (so every browser shows the same picture), the last seconds of a channel
as WAV, a sample's audio and spectrogram, and each channel's latest health."""

from __future__ import annotations

import asyncio
import io
import wave
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from audio.decode import AudioDecodeError, decode_file
from audio.spectrogram import png, spectrogram
from audio.suffixes import is_audio
from bus.history import AudioSpan, recent_audio
from bus_schemas.pcm import to_int16
from projections.gateway import seed

if TYPE_CHECKING:
    from projections.gateway.app import Gateway

WEB = Path(__file__).resolve().parent / "web"
MAX_SECONDS = 60.0
MAX_DAYS = 7  # the channels' hourly heatmap
RATE = 48_000  # a sample file is decoded at this rate for its spectrogram


def register_web(gateway: Gateway, api: FastAPI, read: Any) -> None:
    api.mount("/web", StaticFiles(directory=WEB), name="web")

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    async def recent(source: str, channel: int, seconds: float) -> AudioSpan:
        try:
            seed.read_filters(source, channel, None)
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        span = await recent_audio(gateway._nc, source, channel, seconds)
        if span is None or not len(span.samples):
            raise HTTPException(404, f"no audio of {source} channel {channel} on the bus")
        return span

    @api.get("/api/spectrogram/{source}/{channel}", dependencies=[read],
             response_class=Response)
    async def live_spectrogram(source: str, channel: int,
                               seconds: Annotated[float, Query(gt=0, le=MAX_SECONDS)] = 10.0,
                               width: Annotated[int, Query(ge=50, le=2000)] = 600
                               ) -> Response:
        """The last ``seconds`` of a channel as a PNG spectrogram (0-24 kHz, bottom up);
        ``X-Tidzam-Start-Ns`` / ``X-Tidzam-End-Ns`` give its audio times."""
        span = await recent(source, channel, seconds)
        image = await asyncio.to_thread(_png, span.samples, span.sample_rate, width)
        return Response(image, media_type="image/png", headers={
            "X-Tidzam-Start-Ns": str(span.start_ns), "X-Tidzam-End-Ns": str(span.end_ns),
            "Cache-Control": "no-store"})

    @api.get("/api/listen/{source}/{channel}", dependencies=[read], response_class=Response)
    async def listen(source: str, channel: int,
                     seconds: Annotated[float, Query(gt=0, le=MAX_SECONDS)] = 10.0
                     ) -> Response:
        """The last ``seconds`` of a channel as a WAV file (16-bit mono)."""
        span = await recent(source, channel, seconds)
        return Response(wav(span.samples, span.sample_rate), media_type="audio/wav",
                        headers={"Cache-Control": "no-store"})

    async def sample_file(sample_id: str) -> Path:
        rows = await gateway.rows("SELECT path FROM samples WHERE sample_id = %s",
                                  (sample_id,))
        if not rows or not rows[0]["path"]:
            raise HTTPException(404, "no such sample (or its file was not written)")
        path = await asyncio.to_thread(_inside, gateway.settings.samples_root(),
                                       str(rows[0]["path"]))
        if path is None:
            raise HTTPException(404, "the sample's file is not in the samples folder")
        return path

    @api.get("/api/samples/{sample_id}/audio", dependencies=[read])
    async def sample_audio(sample_id: Annotated[str, PathParam(pattern=seed.SAMPLE_ID)]
                           ) -> FileResponse:
        """The sample's audio file, as the extractor wrote it."""
        return FileResponse(await sample_file(sample_id))

    @api.get("/api/samples/{sample_id}/spectrogram", dependencies=[read],
             response_class=Response)
    async def sample_spectrogram(sample_id: Annotated[str, PathParam(pattern=seed.SAMPLE_ID)],
                                 width: Annotated[int, Query(ge=50, le=2000)] = 300
                                 ) -> Response:
        path = await sample_file(sample_id)
        try:
            samples, _ = await asyncio.to_thread(decode_file, path, RATE)
        except AudioDecodeError as exc:
            raise HTTPException(422, f"the sample does not decode: {exc}") from exc
        image = await asyncio.to_thread(_png, samples[0], RATE, width)
        return Response(image, media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @api.get("/api/site", dependencies=[read])
    async def site() -> dict[str, float | str | None]:
        """Where the site is (``TIDZAM_SITE_LAT`` / ``_LON``), for sunrise and sunset, and
        the Icecast server's URL when the stack runs one (each source is a mount)."""
        s = gateway.settings
        icecast = (f"http://{s.icecast_host}:{s.icecast_port}"
                   if s.icecast_host and s.icecast_port else None)
        return {"lat": s.site_lat, "lon": s.site_lon, "icecast": icecast}

    @api.get("/api/channels/hourly", dependencies=[read])
    async def channels_hourly(since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Per UTC hour, source and channel: mean noise floor and level (dBFS) and the
        detections (``unknown`` is never one; ``quiet`` is left out)."""
        if not timedelta(0) < until - since <= timedelta(days=MAX_DAYS):
            raise HTTPException(422, f"until must follow since, by at most {MAX_DAYS} days")
        return await gateway.rows(
            "WITH h AS (SELECT date_trunc('hour', time) AS bucket, source, channel, "
            "avg(noise_floor_dbfs) AS noise_floor_dbfs, avg(rms_dbfs) AS rms_dbfs "
            "FROM channel_health WHERE time >= %s AND time < %s GROUP BY 1, 2, 3), "
            "d AS (SELECT date_trunc('hour', time) AS bucket, source, channel, "
            "count(*) AS detections FROM detections WHERE time >= %s AND time < %s "
            "AND label <> 'quiet' GROUP BY 1, 2, 3) "
            "SELECT bucket, source, channel, h.noise_floor_dbfs, h.rms_dbfs, "
            "COALESCE(d.detections, 0) AS detections FROM h FULL JOIN d "
            "USING (bucket, source, channel) ORDER BY source, channel, bucket LIMIT 20000",
            (since, until, since, until))

    @api.get("/api/windows/latest", dependencies=[read])
    async def latest_windows() -> list[dict[str, Any]]:
        """Each channel of each loaded source: its newest window's decision and best
        score (the live grid's tiles before the next broadcast)."""
        return await gateway.rows(  # time as the seed's broadcasts spell it
            "SELECT p.* FROM sources s CROSS JOIN LATERAL unnest(s.channels) AS c(channel) "
            "CROSS JOIN LATERAL (SELECT to_char(time AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD-HH24-MI-SS.MS') AS time, source, channel, model_id, model_version, "
            "result, (SELECT max(x) FROM unnest(scores) x) AS confidence FROM predictions "
            "WHERE source = s.name AND channel = c.channel ORDER BY time DESC LIMIT 1) p "
            "WHERE s.state = 'loaded' ORDER BY p.source, p.channel")

    @api.get("/api/health/latest", dependencies=[read])
    async def latest_health() -> list[dict[str, Any]]:
        """Each channel of each known source: its newest health second."""
        return await gateway.rows(
            "SELECT h.* FROM sources s CROSS JOIN LATERAL unnest(s.channels) AS c(channel) "
            "CROSS JOIN LATERAL (SELECT time, end_time, source, channel, rms_dbfs, "
            "peak_dbfs, clip_ratio, noise_floor_dbfs, hum_db, hum_hz, dead "
            "FROM channel_health WHERE source = s.name AND channel = c.channel "
            "ORDER BY time DESC LIMIT 1) h ORDER BY h.source, h.channel")


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is an audio file inside ``root`` (links resolved)."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) and is_audio(path) and path.is_file() else None


def _png(samples: Any, rate: int, width: int) -> bytes:
    return png(spectrogram(samples, rate, width=width))


def wav(samples: np.ndarray[Any, Any], rate: int) -> bytes:
    """16-bit mono WAV of int16 (or float in [-1, 1]) samples."""
    pcm = samples if samples.dtype == np.int16 else to_int16(samples)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()
