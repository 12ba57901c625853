"""A JPEG's frame header (SOF), read by walking its marker segments: no decoding.

The frame header says which coding process a JPEG uses and its sample precision. Both
decide whether the decoders slipstream uses can decode it at all, and a decoder that
mishandles one (libjpeg-turbo 3 ignores the DCT scaling factor for lossless JPEGs and
writes the full image into a buffer sized for the scaled one) must never see it. So
the build refuses such images by name (:func:`undecodable_reason`), and the decode path
checks the same thing again before handing bytes to native code, for caches written
before the check existed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JpegFrame", "read_frame", "undecodable_reason", "SOF_PROCESSES"]

#: Start-of-frame markers and the coding process each one announces (ITU T.81, B.1.1.3).
SOF_PROCESSES = {
    0xC0: "baseline DCT",
    0xC1: "extended sequential DCT",
    0xC2: "progressive DCT",
    0xC3: "lossless",
    0xC5: "differential sequential DCT",
    0xC6: "differential progressive DCT",
    0xC7: "differential lossless",
    0xC9: "extended sequential DCT, arithmetic-coded",
    0xCA: "progressive DCT, arithmetic-coded",
    0xCB: "lossless, arithmetic-coded",
    0xCD: "differential sequential DCT, arithmetic-coded",
    0xCE: "differential progressive DCT, arithmetic-coded",
    0xCF: "differential lossless, arithmetic-coded",
}
_LOSSLESS = frozenset((0xC3, 0xC7, 0xCB, 0xCF))
_HIERARCHICAL = frozenset((0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF))
_SOS = 0xDA
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RSTn, SOI: no length field


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's frame header declares."""

    marker: int  #: the SOF marker's second byte (0xC0 ... 0xCF)
    precision: int  #: bits per sample
    height: int  #: 0 means "given later by a DNL marker"
    width: int
    components: int

    @property
    def process(self) -> str:
        return SOF_PROCESSES[self.marker]

    @property
    def lossless(self) -> bool:
        return self.marker in _LOSSLESS


def read_frame(data: bytes | memoryview) -> JpegFrame | None:
    """The frame header of the JPEG ``data``, or None when none can be found before the
    first scan (not a JPEG, or damaged before its frame header)."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if view[i] != 0xFF:
            return None  # segments must follow each other: garbage between them
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = (view[i + 2] << 8) | view[i + 3]
        if marker in SOF_PROCESSES:
            if length < 8 or i + 10 > n:
                return None
            return JpegFrame(
                marker=marker,
                precision=view[i + 4],
                height=(view[i + 5] << 8) | view[i + 6],
                width=(view[i + 7] << 8) | view[i + 8],
                components=view[i + 9],
            )
        if marker == _SOS or length < 2:
            return None
        i += 2 + length
    return None


def undecodable_reason(frame: JpegFrame) -> str | None:
    """Why slipstream will not decode a JPEG with this frame header, or None.

    Refused: lossless JPEGs (whether they decode depends on the libjpeg build, and one
    that decodes them ignored the DCT scaling factor, overflowing its output buffer),
    hierarchical (differential) JPEGs (no libjpeg decodes them), sample precisions other
    than 8 bits (the 8-bit decoders refuse 12- and 16-bit data, and so does Pillow), and
    a height left to a DNL marker (libjpeg does not support it).
    """
    if frame.lossless or frame.marker in _HIERARCHICAL:
        return (f"it is a {frame.process} JPEG, which slipstream does not decode; convert it "
                f"to a baseline JPEG or a PNG")
    if frame.precision != 8:
        return (f"it is a {frame.precision}-bit JPEG; slipstream decodes 8-bit JPEGs only: "
                f"convert it to an 8-bit JPEG or a PNG")
    if frame.height == 0:
        return ("its frame header gives no height (a DNL marker), which libjpeg does not "
                "support; re-encode it")
    return None
