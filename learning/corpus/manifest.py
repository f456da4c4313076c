"""The corpus manifest: every file's origin, licence, class, group and side (pydantic).

Saved as ``corpus.json`` beside a compiled dataset and in every model folder,
so anyone can tell where each recording came from and under which licence.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from learning.corpus.packages import QUIET_DEFINITION


class CorpusFile(BaseModel):
    """One labelled recording of the corpus (unique by content)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: str
    label: str = Field(alias="class")
    also: list[str] = Field(default_factory=list)  # other classes of a mixture, throughout
    group: str
    package: str
    version: str
    path: str  # inside the package; "<archive>#NN" for a member of a sound archive
    title: str = ""
    licence: str
    note: str = ""
    local: str  # relative to the corpus cache directory
    duplicates: list[str] = Field(default_factory=list)
    split: Literal["train", "test", "time"] | None = None  # set when a dataset is built
    time_split_s: float | None = None  # for split "time": test windows start after this
    duration_s: float | None = None
    windows_train: int = 0
    windows_test: int = 0


class ExcludedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str
    path: str
    sha256: str
    reason: str


class PackageInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    licence: str
    copyright: str
    deb_sha256: str


class CorpusManifest(BaseModel):
    """Every file of the corpus with its origin, licence, label and (once split) side."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["tidzam-corpus-v1"] = "tidzam-corpus-v1"
    created: datetime
    classes: list[str]
    quiet: str = QUIET_DEFINITION
    packages: dict[str, PackageInfo]
    files: list[CorpusFile]
    excluded: list[ExcludedFile] = Field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1, by_alias=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> CorpusManifest:
        return cls.model_validate_json(path.read_text())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
