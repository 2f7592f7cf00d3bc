"""Read a ``torch.save`` file as weights only, refusing anything else in one line of our own words.

torch's own refusal advises loading the file with its safety check switched off (which would run the file's
code) and warns about pickle protocols on stderr; neither reaches the user. Only torch's zip format with uncompressed
records is read, so no record can inflate beyond the file's size.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from midog_viewer.errors import MidogError, ModelError

#: What a refused pickle is, in our words (no advice to turn the safety off).
NOT_WEIGHTS = "it holds Python objects other than tensors{found}; midog-viewer loads weights only"
UNKNOWN_OPCODE = (
    "its pickle uses the {name} instruction, which the weights-only reader does not accept; "
    "midog-viewer loads only weights saved with torch.save's default pickle protocol"
)


def load_weights_only(
    path: str | Path, *, stand_ins: Iterable[Any] = (), error: type[MidogError] = ModelError
) -> Any:
    """``torch.load(path, weights_only=True)`` with ``stand_ins`` allowed; any refusal is one ``error``."""
    path = Path(path)

    def refuse(reason: str) -> MidogError:
        return error(f"refusing to load {path}: {reason}.")

    try:
        size = path.stat().st_size
        if size == 0:
            raise refuse("the file is empty")
        if not zipfile.is_zipfile(path):
            raise refuse("it is not a checkpoint written by torch.save (no zip archive)")
        with zipfile.ZipFile(path) as archive:
            if any(item.compress_type != zipfile.ZIP_STORED for item in archive.infolist()):
                raise refuse("it has compressed records, which torch.save never writes")
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise refuse(f"it cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(stand_ins)):
            warnings.simplefilter("ignore")  # torch's pickle-protocol warning is not the user's concern
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        opcode = re.search(r"Unsupported operand (\d+)", str(exc))
        if opcode:
            raise refuse(UNKNOWN_OPCODE.format(name=_opcode_name(int(opcode.group(1))))) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise refuse(NOT_WEIGHTS.format(found=f" ({found.group(1)})" if found else "")) from None
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError… for damaged archives
        raise refuse("it is damaged or not a PyTorch checkpoint") from None


def _opcode_name(code: int) -> str:
    import pickletools

    return next((op.name for op in pickletools.opcodes if ord(op.code) == code), f"opcode {code}")
