"""A local Orthanc with its DICOMweb plugin (Debian's ``orthanc`` + ``orthanc-dicomweb``), for ``make pacs`` and
the tests: its own storage folder, HTTP on the given port, no DICOM port, and remote access off (Orthanc 1.10
cannot bind one address; it refuses every client that is not on this machine)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def installed() -> bool:
    return (shutil.which("Orthanc") is not None or Path(ORTHANC).exists()) and Path(DICOMWEB_PLUGIN).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalOrthanc:
    """``with LocalOrthanc(folder) as pacs: pacs.dicomweb`` — started on enter, stopped on exit."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self, timeout: float = 60.0) -> "LocalOrthanc":
        if not installed():
            raise RuntimeError("Orthanc is not installed: apt-get install -y orthanc orthanc-dicomweb (as root)")
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "CTSS-dev", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1,
        }, indent=1))
        self._log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([ORTHANC, str(config)], stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until Orthanc answers (or has died)
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start (see {self.folder / 'orthanc.log'})")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/system", timeout=2).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalOrthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
