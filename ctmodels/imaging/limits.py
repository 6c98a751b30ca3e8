"""Safety limits for everything the readers accept.

Uploads come from a browser, so every size is checked from the header *before* anything is decoded:
a hostile or simply wrong file must produce a clear error, not an out-of-memory crash of the app.
The numbers are generous for real chest CT (a 512x512x1000 thin-slice series is ~262 M voxels
raw but we cap at 160 M because the float32 copy alone is 640 MB, and the models, Grad-CAM and
lung mask all make further copies).
"""

from __future__ import annotations

#: Pixels in one 2-D slice or image. 4096x4096 covers every CT matrix in use (512 to 2048) and
#: high-resolution scanned films; anything bigger is a photo or a decompression bomb.
MAX_SLICE_PIXELS: int = 4096 * 4096

#: Voxels in a whole volume (float32 -> 640 MB). Keeps one upload from exhausting host memory.
MAX_VOXELS: int = 160_000_000

#: Slices in one series or stack. Chest CT at 0.5 mm over 50 cm is ~1000 slices.
MAX_SLICES: int = 2000

#: Bytes of one upload (file, zip, or folder total). Matches the upload limit the app sets.
MAX_INPUT_BYTES: int = 2 * 1024**3

#: Members in one zip or folder: a series has hundreds of files; 5000 leaves room for scouts and
#: reconstructions while bounding the work spent on archives full of tiny junk entries.
MAX_ARCHIVE_MEMBERS: int = 5000

#: Sum of the declared uncompressed sizes of the members we will read (zip-bomb guard).
MAX_ARCHIVE_UNCOMPRESSED_BYTES: int = 2 * 1024**3

#: Largest believable uncompressed/compressed ratio for one member. Medical images compress
#: 2-10x (a mostly-air CT maybe 20x); a ratio of 200 only comes from crafted zip bombs.
MAX_COMPRESSION_RATIO: float = 200.0

#: The ratio check only applies above this uncompressed size: tiny members (a blank 1 kB file)
#: can legitimately have absurd ratios without being dangerous.
COMPRESSION_RATIO_MIN_BYTES: int = 1024 * 1024

#: Smallest usable side of a slice, in pixels. A 1-pixel or 1-line "image" (or anything narrower
#: than this) cannot show anatomy; it is nearly always a thumbnail, an icon or a mis-shaped array.
MIN_SLICE_SIDE: int = 8

#: Bytes read per chunk when decompressing archive members or gzip streams, so the actual
#: decompressed size is compared with the declared one as we go.
READ_CHUNK_BYTES: int = 1024 * 1024
