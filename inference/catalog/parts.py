"""Reading a scan's part files (``part-NNNNNN.npz``, :func:`deepmine.inference.scan.shards.run_shard`)
member by member, for the streamed merge (:mod:`deepmine.inference.catalog.merge`)."""
from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError, file_error

__all__ = ["PartFile", "open_part", "damaged"]


def damaged(path, exc) -> InputError:
    return file_error(path, f"damaged part file ({exc}); delete it and its .done marker, then --resume")


class PartFile:
    """An open part file (an uncompressed ``.npz``): members read straight from their offset in
    the zip with one ``numpy.fromfile`` each (no zipfile read loop, no CRC pass: a truncated
    member is still caught by its length); compressed members through numpy's reader."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.z = np.load(path, allow_pickle=False)
            self.fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        except Exception as exc:  # noqa: BLE001 - zip/npy errors of a damaged part
            raise damaged(path, exc) from None
        self.files = self.z.files

    def close(self) -> None:
        self.fh.close()
        self.z.close()

    def _header(self, name: str):
        import zipfile

        info = self.z.zip.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        self.fh.seek(info.header_offset)
        local = self.fh.read(30)
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        self.fh.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(self.fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(self.fh)

    def get(self, name: str) -> np.ndarray:
        try:
            head = self._header(name)
            if head is None or head[1] or head[2].hasobject:
                return self.z[name]
            shape, _, dtype = head
            count = int(np.prod(shape))
            arr = np.fromfile(self.fh, dtype=dtype, count=count)
            if arr.size != count:
                raise ValueError(f"member {name!r} truncated")
            return arr.reshape(shape)
        except Exception as exc:  # noqa: BLE001
            raise damaged(self.path, exc) from None

    def dtype(self, name: str) -> np.dtype:
        """dtype of a member from its header, without reading its data."""
        try:
            head = self._header(name)
            return self.z[name].dtype if head is None else head[2]
        except Exception as exc:  # noqa: BLE001
            raise damaged(self.path, exc) from None


@contextlib.contextmanager
def open_part(path: Path):
    part = PartFile(path)
    try:
        yield part
    finally:
        part.close()
