"""The hostile-input corpus (tests/fixtures/hostile/, written by
tests/fixtures/make_hostile_fixtures.py) and what slipstream must do with each file.

Fuzzers take :func:`hostile_files` as seeds to mutate; tests take :data:`EXPECTED`.
"""

from __future__ import annotations

from pathlib import Path

HOSTILE_DIR = Path(__file__).resolve().parent / "fixtures" / "hostile"

#: file name -> ("decodes", None); ("refused", a regex the build's SampleError matches); or
#: ("decode_error", a regex the loader's SampleError matches: the header reads fine, the
#: damage shows only when the whole file is decoded)
EXPECTED: dict[str, tuple[str, str | None]] = {
    "baseline_48x40.jpg": ("decodes", None),
    "progressive_48x40.jpg": ("decodes", None),
    "restarts_48x40.jpg": ("decodes", None),
    "cmyk_48x40.jpg": ("decodes", None),
    "arithmetic_48x40.jpg": ("decodes", None),
    "lossless_rgb_48x40.jpg": ("refused", r"a lossless JPEG, which slipstream does not decode"),
    "lossless_gray_48x40.jpg": ("refused", r"a lossless JPEG, which slipstream does not decode"),
    "12bit_gray_48x40.jpg": ("refused", r"a 12-bit JPEG; slipstream decodes 8-bit JPEGs only"),
    "truncated_48x40.jpg": ("decode_error", r"Premature end of JPEG file"),
    "header_lies_13000x13000.jpg": ("refused", r"13000x13000 = 169,000,000 pixels, more than "
                                               r"max_pixels=50,000,000"),
    "bilevel_9000x9000.png": ("refused", r"9000x9000 = 81,000,000 pixels, more than "
                                         r"max_pixels=50,000,000"),
}


def hostile_files() -> dict[str, bytes]:
    """Every file of the corpus by name (seeds for the fuzzers)."""
    return {p.name: p.read_bytes() for p in sorted(HOSTILE_DIR.iterdir()) if p.is_file()}
