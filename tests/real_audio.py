"""Real recordings for the integration tests, fetched from Debian packages once per cache."""

from __future__ import annotations

import os
from pathlib import Path

from learning.corpus.fetch import fetch_package

CACHE = Path(os.environ.get("TIDZAM_TEST_CACHE", Path(__file__).parent / ".cache" / "corpus"))

MEGAGLEST = "megaglest-data"
NIGHT = "usr/share/games/megaglest/tilesets/birch_forest/sounds/night.ogg"  # 131 s, stereo
RAIN = "usr/share/games/megaglest/tilesets/autumn/sounds/rain.ogg"  # 16 s, stereo
# RAIN is a storm: the corpus labels it rain+thunder, and a window of it decided either
# is right (the YAMNet-based selector mostly says thunder, the first one said rain)
STORM = ("rain", "thunder")
DAY = "usr/share/games/megaglest/tilesets/spring/sounds/day.ogg"  # 60 s, stereo


def real_file(package: str, path: str) -> Path:
    """The unpacked file ``path`` of a Debian package (downloaded with apt-get once)."""
    fetched = fetch_package(package, CACHE)
    local = fetched.root / path
    if not local.exists():
        raise FileNotFoundError(f"{package} does not ship {path}")
    return local
