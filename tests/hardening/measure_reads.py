"""Child process for the hostile-input tests: read each input with ``read_any`` under an address-space cap and
a 10 s alarm, and record the outcome, the seconds and the peak memory the read added.

Peak memory is the process's resident high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
before each input, freed heap handed back with ``malloc_trim`` first) minus the resident size just before
the read: everything the read touched, C libraries (zlib, libjpeg, Pillow) included, not only what Python
traces. The input's bytes are in memory before that, as an upload's are. A read's decoded size is its voxel
count times 4 bytes (the float32 volume), also when the volume keeps whole HU as int16 (half that).

Usage: ``python -m tests.hardening.measure_reads MANIFEST.json OUT.json [address-space GB]``; the manifest is
a list of ``{"id", "name", "file"}`` (bytes read from ``file`` first) or ``{"id", "name", "path"}`` (the path
itself is the input: folders, FIFOs, missing files).
"""

from __future__ import annotations

import ctypes
import gc
import json
import resource
import signal
import sys
import time
from pathlib import Path


class Hang(Exception):
    pass


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _alarm(*_: object) -> None:
    raise Hang()


def main(manifest: Path, out: Path, cap_gb: float) -> None:
    cap = int(cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from ctmodels.imaging import ImageReadError, read_any

    trim = ctypes.CDLL("libc.so.6").malloc_trim
    signal.signal(signal.SIGALRM, _alarm)
    results = {}
    for item in json.loads(manifest.read_text()):
        source = Path(item["file"]).read_bytes() if "file" in item else Path(item["path"])
        gc.collect()
        trim(0)
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
        t0 = time.perf_counter()
        decoded = 0
        signal.alarm(10)
        try:
            vol = read_any(source, name=item["name"])
            decoded = vol.array.size * 4  # its float32 volume, whether it keeps float32 or whole HU as int16
            outcome = "ok:" + "x".join(map(str, vol.shape))
            del vol
        except ImageReadError as exc:
            outcome = f"typed:{type(exc).__name__}:{exc}"
        except Hang:
            outcome = "HANG"
        except MemoryError:
            outcome = "MEMORY"
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome = f"UNHANDLED:{type(exc).__name__}:{str(exc)[:200]}"
        finally:
            signal.alarm(0)
        seconds = time.perf_counter() - t0
        peak = max(0, _status_kb("VmHWM") - before) * 1024
        results[item["id"]] = {"outcome": outcome, "seconds": round(seconds, 3), "peak_bytes": peak,
                               "decoded_bytes": decoded}
        del source
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 2.0)
