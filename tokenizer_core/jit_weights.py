"""The tensors of a TorchScript archive (.jit), read as data: no TorchScript is loaded or run.

`torch.jit.load` compiles the Python-like code stored in the archive (`<name>/code/...`) and
runs any `__setstate__` it defines: loading a .jit file runs its author's program. The weights
themselves sit beside that code as plain data: `<name>/data.pkl`, a pickle of the module tree
(one object per submodule, its parameters and buffers as tensors), and `<name>/data/<key>`, the
raw storages. This module unpickles `data.pkl` with an allowlist — the archive's own module
classes (`__torch__.*`) become inert attribute holders, tensors are rebuilt from their storages
with `torch._utils._rebuild_tensor_v2`, anything else is refused — so a hostile archive can at
worst fail to load.

    jit_state_dict(path) -> {dotted name: tensor}   same names as torch.jit.load(path).state_dict()
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# the largest data.pkl we read (the module tree, not the weights): official files hold ~1 MB
MAX_PICKLE_BYTES = 64 << 20


class _Module:
    """Stands in for an archive class: keeps the state the pickle gives it, runs nothing."""

    def __init__(self, *_: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") or module == "__torch__":
            return _Module
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # only ever handed back to persistent_load below
        raise pickle.UnpicklingError(f"a TorchScript archive's data.pkl may not name {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype = _STORAGE_DTYPES[storage_type]
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise ValueError(f"storage {key}: {len(raw)} bytes for {numel} elements of {dtype}")
        untyped = torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _prefix(archive: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"{path}: not a TorchScript archive (no single <name>/data.pkl)")
    prefix = pickles[0].split("/", 1)[0]
    order = archive.read(f"{prefix}/byteorder").strip() if f"{prefix}/byteorder" in archive.namelist() else b"little"
    if order != b"little":
        raise ValueError(f"{path}: stored {order.decode()}-endian; only little-endian archives are read")
    return prefix


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.state if isinstance(obj, _Module) else None
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, _Module):
            _flatten(value, f"{prefix}{name}.", out)


def jit_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript file, without loading it as TorchScript."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        prefix = _prefix(archive, path)
        info = archive.getinfo(f"{prefix}/data.pkl")
        if info.file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"{path}: data.pkl is {info.file_size} bytes (more than {MAX_PICKLE_BYTES})")
        root = _Unpickler(archive.read(info), archive, prefix).load()
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    if not out:
        raise ValueError(f"{path}: the archive holds no tensors")
    return out
