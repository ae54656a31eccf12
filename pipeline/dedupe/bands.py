"""Band arithmetic of multi-index hashing: exact Hamming-radius search through exact-match indexes.

Pure. A ``bits``-bit hash is cut into ``bands`` contiguous bands. If two hashes differ in at most
``radius`` bits, then by the pigeonhole principle at least one band differs in at most
``radius // bands`` bits. So probing every band with every value within ``radius // bands`` bits
of the query's band (``probes``) retrieves every stored hash within ``radius``: recall is exact,
and false candidates are removed by a popcount (``hamming``). With ``bands = radius + 1`` the
probe radius is 0 (candidates share one band exactly: the classic split); fewer, wider bands with
a probe radius of 1 keep the number of candidates small at 10^7 stored hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

import numpy as np


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two non-negative integers."""
    return (a ^ b).bit_count()


def hex_to_int(value: str) -> int:
    """A hex hash as an unsigned integer (most significant bit first)."""
    return int(value, 16)


def to_signed64(value: int) -> int:
    """An unsigned 64-bit value as the signed integer a BIGINT column stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


def from_signed64(value: int) -> int:
    """Inverse of :func:`to_signed64`."""
    return value + (1 << 64) if value < 0 else value


@dataclass(frozen=True)
class BandPlan:
    """How hashes of ``bits`` bits are banded for search within ``radius``.

    Bands are contiguous, most significant first, widths differing by at most one bit.
    """

    bits: int
    bands: int
    radius: int

    def __post_init__(self) -> None:
        if not 1 <= self.bands <= self.bits:
            raise ValueError(f"bands must be in 1..{self.bits}, got {self.bands}")
        if self.radius < 0:
            raise ValueError("radius must be >= 0")

    @property
    def probe_radius(self) -> int:
        """Bits in which a probe may differ from the query's band (pigeonhole bound)."""
        return self.radius // self.bands

    @cached_property
    def widths(self) -> tuple[int, ...]:
        base, extra = divmod(self.bits, self.bands)
        return tuple(base + 1 if i < extra else base for i in range(self.bands))

    @cached_property
    def shifts(self) -> tuple[int, ...]:
        out = []
        remaining = self.bits
        for width in self.widths:
            remaining -= width
            out.append(remaining)
        return tuple(out)

    def split(self, value: int) -> tuple[int, ...]:
        """The band values of ``value`` (an unsigned ``bits``-bit integer)."""
        return tuple(
            (value >> shift) & ((1 << width) - 1)
            for shift, width in zip(self.shifts, self.widths, strict=True)
        )

    def probes(self, value: int) -> tuple[tuple[int, ...], ...]:
        """For every band, each band value within ``probe_radius`` bits of the query's band.

        Any stored hash within ``radius`` of ``value`` has, in at least one band, one of these
        values: searching exact matches of them loses nothing.
        """
        out = []
        for band, width in zip(self.split(value), self.widths, strict=True):
            values = [band]
            for k in range(1, min(self.probe_radius, width) + 1):
                for positions in combinations(range(width), k):
                    flipped = band
                    for p in positions:
                        flipped ^= 1 << p
                    values.append(flipped)
            out.append(tuple(values))
        return tuple(out)

    def split_array(self, values: np.ndarray) -> np.ndarray:
        """Band values of many uint64 hashes at once, shape (n, bands) uint64 (64-bit plans)."""
        if self.bits != 64:
            raise ValueError("split_array supports 64-bit plans")
        v = values.astype(np.uint64, copy=False)
        cols = [
            (v >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            for shift, width in zip(self.shifts, self.widths, strict=True)
        ]
        return np.stack(cols, axis=1)


def popcount64(values: np.ndarray) -> np.ndarray:
    """Bit counts of a uint64 array."""
    return np.bitwise_count(values.astype(np.uint64, copy=False))
