"""Where a composed model's parts come from: `hub:<repo>[/<subfolder>]` references (Hugging Face model repos,
looked up in the local cache first) or local paths; every part that cannot be found is reported at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcub.models.base import ModelError

HUB_PREFIX = "hub:"


@dataclass(frozen=True)
class Component:
    """One part of a model: what it is, where it is asked for, and the --model-arg key that points elsewhere."""

    role: str
    reference: str
    arg_key: str


def resolve_components(components: list[Component], offline: bool) -> dict[str, Path]:
    """Local paths by role; a ModelError lists every component that is neither on disk nor fetchable
    (`offline`: nor in the local Hugging Face cache)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for component in components:
        try:
            found[component.role] = _resolve(component.reference, offline)
        except (OSError, ValueError) as error:
            missing.append(
                f"  {component.role}: {component.reference} ({error}); "
                f"point at a local copy with --model-arg {component.arg_key}=PATH"
            )
    if missing:
        raise ModelError("model components not found:\n" + "\n".join(missing))
    return found


def _resolve(reference: str, offline: bool) -> Path:
    if not reference.startswith(HUB_PREFIX):
        path = Path(reference).expanduser()
        if not path.exists():
            raise FileNotFoundError("no such local file or directory")
        return path
    owner, _, rest = reference[len(HUB_PREFIX) :].partition("/")
    name, _, subfolder = rest.partition("/")
    if not owner or not name:
        raise ValueError("a hub reference is hub:<owner>/<name>[/<subfolder>]")
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*"] if subfolder else None
    repo = f"{owner}/{name}"
    try:
        root = snapshot_download(repo, allow_patterns=patterns, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the hub
        if offline:
            raise FileNotFoundError("not in the local Hugging Face cache (downloads are off)") from None
        try:
            root = snapshot_download(repo, allow_patterns=patterns)
        except Exception as error:  # noqa: BLE001 - offline or unknown: reported with the component
            raise FileNotFoundError(f"not cached and not fetchable: {type(error).__name__}") from None
    path = Path(root) / subfolder if subfolder else Path(root)
    if not path.exists():
        raise FileNotFoundError(f"{repo} has no {subfolder}")
    return path
