"""CLI: ``python -m ctmodels.imaging.phantom --out DIR --patients N --seed S``."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .dataset import build_dataset
from .generate import DEFAULT_THRESHOLD_PCT, PhantomConfig
from .writers import LAYOUTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ctmodels.imaging.phantom",
        description="Generate a synthetic chest-CT phantom dataset in every layout the app reads.",
    )
    ap.add_argument("--out", required=True, help="output folder (replaced atomically if it exists)")
    ap.add_argument("--patients", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slices", type=int, default=PhantomConfig.n_slices)
    ap.add_argument("--size", type=int, default=PhantomConfig.size, help="pixels per side")
    ap.add_argument("--pixel-mm", type=float, default=PhantomConfig.pixel_mm)
    ap.add_argument("--slice-mm", type=float, default=PhantomConfig.slice_mm)
    ap.add_argument("--noise-hu", type=float, default=PhantomConfig.noise_hu)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, help="mild/severe cut, %% lung")
    ap.add_argument("--gap", type=float, default=14.0, help="width of the empty band around the cut, %% lung")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma list from {','.join(LAYOUTS)}")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = PhantomConfig(
        size=args.size, n_slices=args.slices, pixel_mm=args.pixel_mm, slice_mm=args.slice_mm, noise_hu=args.noise_hu
    )
    t0 = time.time()

    def progress(done: int, total: int) -> None:
        bar = "#" * int(30 * done / total)
        print(f"\r[{bar:<30}] {done}/{total} patients", end="", file=sys.stderr, flush=True)

    try:
        manifest = build_dataset(
            args.out,
            n_patients=args.patients,
            seed=args.seed,
            cfg=cfg,
            layouts=[s for s in args.layouts.split(",") if s],
            threshold_pct=args.threshold,
            gap_pct=args.gap,
            workers=args.workers,
            progress=progress,
        )
    except ValueError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(f"\nwrote {manifest} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
