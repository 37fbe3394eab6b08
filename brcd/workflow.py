"""Helpers used by the Snakemake rules (``workflow/rules/common.smk``)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import yaml

from brcd.io import atomic_path


def write_effective_config(config: Mapping, folder: str = "results/.config") -> str:
    """Write the validated config (defaults filled in) where the CLI can read it.

    The file is rewritten only when its content changes, so its timestamp does
    not make Snakemake rerun anything.
    """
    path = Path(folder) / f"{config['name']}.yaml"
    text = yaml.safe_dump(dict(config), sort_keys=True)
    if not path.exists() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return str(path)
