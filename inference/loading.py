"""Load any model folder into the model that runs it, by its engine."""

from __future__ import annotations

from pathlib import Path

from inference.hearing_model import HearingModel
from inference.modelfolder import ModelFolder
from inference.scoring import TfliteModel

FolderModel = TfliteModel | HearingModel


def load_model(folder: ModelFolder | str | Path, num_threads: int = 1) -> FolderModel:
    """``TfliteModel`` for a TFLite folder, ``HearingModel`` for a yamnet-head one."""
    loaded = folder if isinstance(folder, ModelFolder) else ModelFolder.load(folder)
    if loaded.meta.engine == "yamnet-head":
        return HearingModel(loaded, num_threads=num_threads)
    return TfliteModel(loaded, num_threads=num_threads)
