"""SHA-256 whose running state can be saved to a checkpoint and restored later.

hashlib's objects cannot be serialised, so a resumed conversion would have to
re-read everything already copied. OpenSSL's `SHA256_CTX` is a plain struct
(eight state words, bit count, 64-byte block, fill level): through ctypes we keep
it as bytes. If libcrypto is unavailable, `ResumableSha256.available()` is False
and callers fall back to hashlib (and re-hash the prefix on resume).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache
from typing import Any

CTX_SIZE = 112  # sizeof(SHA256_CTX): 8*4 + 4 + 4 + 16*4 + 4 + 4


@cache
def _lib() -> Any:
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, fn)
    except (OSError, AttributeError):
        return None
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return lib


class ResumableSha256:
    """sha256 with ``state()`` / ``from_state()`` (ctypes on libcrypto, or hashlib)."""

    def __init__(self, state: bytes | None = None) -> None:
        lib = _lib()
        self._h: Any = None
        if lib is None:
            if state is not None:
                raise ValueError("a saved sha256 state needs libcrypto")
            self._h = hashlib.sha256()
            return
        self._ctx = ctypes.create_string_buffer(CTX_SIZE)
        if state is None:
            lib.SHA256_Init(self._ctx)
        else:
            ctypes.memmove(self._ctx, state, CTX_SIZE)

    @staticmethod
    def available() -> bool:
        return _lib() is not None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._h is not None:
            self._h.update(data)
            return
        n = len(data)
        if isinstance(data, memoryview) and data.readonly:
            data = bytes(data)
        buf = (ctypes.c_char * n).from_buffer(data) if not isinstance(data, bytes) else data
        _lib().SHA256_Update(self._ctx, buf, n)  # ctypes releases the GIL

    def state(self) -> bytes | None:
        return None if self._h is not None else self._ctx.raw

    def hexdigest(self) -> str:
        if self._h is not None:
            return str(self._h.hexdigest())
        ctx = ctypes.create_string_buffer(self._ctx.raw, CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        _lib().SHA256_Final(out, ctx)
        return out.raw.hex()


# --- sha256-tree: a block checksum of guest-visible content -------------------------------
#
# digest = sha256(sha256(block 0) || sha256(block 1) || … ), blocks of TREE_BLOCK bytes (the
# last one may be shorter). Blocks are independent, so they are hashed in parallel threads, and
# an all-zero block (a hole) costs nothing: its digest is the constant ZERO_BLOCK_DIGEST.
TREE_BLOCK = 1 << 20
ZERO_BLOCK_DIGEST = hashlib.sha256(bytes(TREE_BLOCK)).digest()


def block_digest(data: bytes | bytearray | memoryview) -> bytes:
    """sha256 of one block (hashlib releases the GIL for large buffers)."""
    return hashlib.sha256(data).digest()


def zero_digest(length: int) -> bytes:
    """Digest of an all-zero block of ``length`` bytes (full blocks: a constant)."""
    return ZERO_BLOCK_DIGEST if length == TREE_BLOCK else hashlib.sha256(bytes(length)).digest()


# --- blake3: plain BLAKE3 of the guest-visible byte stream (what `b3sum` of a raw export prints) --
class Blake3Stream:
    """Incremental BLAKE3 (PyPI `blake3`, Rust; releases the GIL on large updates).

    Its state cannot be saved, so a resumed conversion re-hashes the verified prefix (from the
    source, holes from a zero buffer) before going on: BLAKE3 runs at several GB/s."""

    def __init__(self) -> None:
        import blake3  # only when this checksum is used

        self._h = blake3.blake3()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def state(self) -> bytes | None:
        return None

    def hexdigest(self) -> str:
        return str(self._h.hexdigest())
