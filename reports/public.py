"""What `report --public` leaves out, derived from the one declaration of the configuration keys
(benchmark.config.KEYS): path keys and secret keys are redacted, any other absolute path in a message or a
protocol's text becomes <path>, and a last pass over every page removes the folders the report knows of (the data
roots, the sweep, the home folder) wherever they still appear."""

from __future__ import annotations

import os
import re
from pathlib import Path

from benchmark.config import KEYS, SECRET_KEYS
from benchmark.runs import compat
from reports.runs import ReportRun

ABSOLUTE_PATH = re.compile(r"(?<![\w.<])(?:/[^\s'\"(),;<>]+)+")
WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"(),;<>]+")


def scrub(value):
    """Absolute paths in a message (or in every string of a list or mapping) replaced by <path>."""
    if isinstance(value, str):
        return WINDOWS_PATH.sub("<path>", ABSOLUTE_PATH.sub("<path>", value))
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def _is_file_like(value) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value or os.path.splitext(value)[1] != "")


def redact_config(cfg: dict | None) -> dict:
    """A configuration without its paths and secrets, key by key as declared."""
    out = {}
    for name, value in (cfg or {}).items():
        spec = KEYS.get(compat.key_name(name))  # a key of an old config.yaml under its current name
        if spec is None:  # a key of another version: kept only if it holds no path
            out[name] = scrub(value)
        elif value in (None, "", False, (), []):
            out[name] = value
        elif name in SECRET_KEYS:
            out[name] = "<redacted>"
        elif spec.path_fields:
            out[name] = [{k: ("<redacted>" if k in spec.path_fields and v else scrub(v)) for k, v in item.items()}
                         if isinstance(item, dict) else "<redacted>" for item in value]
        elif spec.path:
            out[name] = "<redacted>"
        elif name == "weights":  # a file per backbone, or a name (imagenet)
            out[name] = ({k: "<a weights file>" if _is_file_like(v) else v for k, v in value.items()}
                         if isinstance(value, dict) else "<a weights file>" if _is_file_like(value) else value)
        else:
            out[name] = scrub(value)
    return out


def known_roots(sweep: Path, runs: list[ReportRun]) -> list[str]:
    """Folders that must not appear in a public report, longest first: every path-typed value of every run's
    configuration (and its folder), the sweep folder and the home folder."""
    roots = {str(Path(sweep).resolve()), str(Path(sweep).absolute()), str(Path.home())}
    for r in runs:
        for name, value in (r.config or {}).items():
            spec = KEYS.get(name)
            if not spec or not value:
                continue
            items = ([item.get(k) for item in value if isinstance(item, dict) for k in spec.path_fields]
                     if spec.path_fields else [value] if spec.path else [])
            for item in items:
                if isinstance(item, str) and os.path.isabs(item):
                    roots |= {item, str(Path(item).parent)}
    return sorted((r for r in roots if len(r) > 1), key=len, reverse=True)


def make_public(runs: list[ReportRun]) -> None:
    """Redact what a published report must not hold: paths and secrets of every configuration, absolute paths in
    errors and protocol texts, image paths and patient ids (no Grad-CAM gallery), the host's platform string."""
    for r in runs:
        r.config = redact_config(r.config)
        r.error = scrub(r.error)
        for key in ("protocol", "external", "imported", "model_card"):
            if getattr(r, key):
                setattr(r, key, scrub(getattr(r, key)))
        r.gallery = []
        r.environment = {k: v for k, v in (r.environment or {}).items() if k != "platform"}


def strip_roots(text: str, roots: list[str]) -> str:
    """The last pass over a public page: every known folder replaced by <path>, whatever wrote it."""
    for root in roots:
        text = text.replace(root, "<path>")
    return text
