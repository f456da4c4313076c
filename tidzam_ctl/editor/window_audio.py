"""The audio of a dataset window, decoded again from the file it came from.

Audio: float32 (channels, n) or the window's channel (n,), at the dataset's
feature sample rate (``FeatureParams.sample_rate``, 48 kHz by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from audio.decode import AudioDecodeError, AudioStream
from inference.features import F32
from learning.corpus.fetch import member_path
from learning.datasets.format import CompiledDataset, SourceFile
from tidzam_ctl.editor.errors import EditorError


def source_file(prov: SourceFile, corpus_caches: Iterable[Path] = ()) -> Path | None:
    """The audio file a dataset file came from, on this machine, or None.

    A local path is used as it is; a corpus package path (``package`` set) is looked
    up in the unpacked packages of each corpus cache (``<cache>/pkgs/<package>_*/``),
    where the corpus put it: an archive's member ``<archive>#<member>`` (``.cat``,
    ``.pk3``, OpenClonk group) under ``_members`` (``fetch.member_path``).
    """
    path = Path(prov.path) if prov.path else None
    if path is not None and path.is_absolute():
        return path if path.is_file() else None
    if prov.package and prov.path:
        for cache in corpus_caches:
            for root in sorted((cache / "pkgs").glob(f"{prov.package}_*")):
                found = member_path(root, prov.path)
                if found.is_file():
                    return found
    return path if path is not None and path.is_file() else None


def read_slice(location: Path | str, rate: int, start_s: float, n: int) -> F32:
    """``n`` samples of every channel from ``start_s`` on: float32 (channels, n) at
    ``rate``, zero-padded past the end of the file."""
    got: list[F32] = []
    have = 0
    with AudioStream(location, rate) as stream:
        stream.seek(start_s)
        channels = stream.info.channels
        for block in stream.blocks():
            got.append(block.samples)
            have += block.frames
            if have >= n:
                break
    audio = np.zeros((channels, n), np.float32)
    if got:
        joined = np.concatenate(got, axis=1)[:, :n]
        audio[:, : joined.shape[1]] = joined
    return audio


def window_audio(ds: CompiledDataset, row: int, corpus_caches: Iterable[Path] = ()) -> F32:
    """The audio of window ``row`` decoded again from its source file: float32 (n,), the
    window's channel, ``window_samples`` long at ``ds.params.sample_rate``.

    Without the gain of an attenuated quiet copy (``gain_db``) or the noise floor:
    the recording as it is. ``EditorError`` when the file is not on this machine.
    """
    prov = ds.provenance[int(ds.file_index[row])]
    path = source_file(prov, corpus_caches)
    if path is None:
        where = f"package {prov.package}, " if prov.package else ""
        raise EditorError(f"cannot play: the source file ({where}{prov.path or 'no path'}) is "
                          "not on this machine")
    params = ds.params
    channel = int(ds.windows.channel[row])
    try:
        audio = read_slice(path, params.sample_rate, float(ds.windows.offset_s[row]),
                           params.window_samples)
    except AudioDecodeError as exc:
        raise EditorError(f"cannot play: {exc}") from None
    if channel >= audio.shape[0]:
        raise EditorError(f"cannot play: {path} has no channel {channel} any more")
    mono: F32 = audio[channel]
    return mono
