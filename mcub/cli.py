"""Command-line arguments shared by the CLIs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcub.data import DEFAULT_DATA_ROOT, DataPaths


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding test/*.json in the authors' layout (default: ./data); relative media paths are "
        "resolved against its parent, then against it",
    )
    parser.add_argument("--media-root", type=Path, help="resolve every relative media path against this folder")
    parser.add_argument(
        "--no-download", action="store_true", help="never fetch anything from the hub (task files, model weights)"
    )


def data_paths(args: argparse.Namespace) -> DataPaths:
    return DataPaths(data_root=args.data_root, media_root=args.media_root, download=not args.no_download)


def split_names(text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]
