"""``python -m ctmodels.pacs`` (``make pacs``): a local Orthanc on 127.0.0.1 with the sample studies loaded — the
COVID-CT-MD series of ``../shared/data/real`` when present and a demo phantom study — until Ctrl-C. Its storage
lives in the workspace (``workspace/pacs``), so a second start finds the studies again."""

from __future__ import annotations

import argparse
import logging
import signal
import time

from ..workspace import demo_data_dir, real_data_dir, workspace_dir
from .client import PacsClient
from .loading import load_series
from .orthanc import LocalOrthanc

COVID_CT_MD = ("COVID-19 subjects/P002", "Cap subjects/cap001", "Normal subjects/normal001")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ctmodels.pacs", description=__doc__)
    ap.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (default 8042)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    folders = [real_data_dir() / "covid-ct-md" / "Sample data" / s for s in COVID_CT_MD]
    folders = [f for f in folders if f.is_dir()] + sorted((demo_data_dir() / "dicom").glob("PH0001"))
    with LocalOrthanc(workspace_dir() / "pacs", port=a.port) as server:
        studies = load_series(PacsClient(server.dicomweb), folders)
        print(f"\nOrthanc's DICOMweb endpoint: {server.dicomweb}  (set CTSS_DICOMWEB_URL to it, or paste it on "
              "Compare → PACS)\nStudies loaded (Study Instance UIDs):")
        for name, uid in studies.items():
            print(f"  {name:10s} {uid}")
        print("Ctrl-C stops the server.", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            while not stop and server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
