"""Run registry: one folder per run (config, metrics, log, checkpoints, evaluation) indexed in SQLite.

The SQLite file lives in the workspace (``runs.db``); WAL mode lets the app read while a training
process writes. A run folder holds:

    config.json   the full RunConfig          metrics.jsonl  one line per finished epoch
    log.txt       the process log             progress.json  the live position (epoch, batch, ETA)
    state/        resumable training state    best/          best checkpoint so far (by val loss)
    model/        the final checkpoint        eval.json      test-split evaluation
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ctmodels.atomic import create_dir, read_json, write_json_atomic
from ctmodels.workspace import workspace_dir

from ..config import RunConfig

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT,
    command TEXT NOT NULL,
    model_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_dir TEXT NOT NULL,
    parent TEXT,
    config TEXT NOT NULL,
    summary TEXT,
    error TEXT,
    pid INTEGER,
    nprocs INTEGER DEFAULT 1
)
"""


@dataclass(frozen=True)
class Run:
    id: str
    name: str | None
    command: str
    model_key: str
    status: str
    created: float
    started: float | None
    finished: float | None
    dir: Path
    parent: str | None
    config: dict[str, Any]
    summary: dict[str, Any]
    error: str | None
    pid: int | None
    nprocs: int

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    @property
    def progress_path(self) -> Path:
        return self.dir / "progress.json"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def best_dir(self) -> Path:
        return self.dir / "best"

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def eval_path(self) -> Path:
        return self.dir / "eval.json"

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
        return out

    def progress(self) -> dict[str, Any] | None:
        return read_json(self.progress_path)

    def evaluation(self) -> dict[str, Any] | None:
        return read_json(self.eval_path)

    def cv_report(self) -> dict[str, Any] | None:
        """A cross-validation run's report (``report.json``), once written."""
        return read_json(self.dir / "report.json")


def _ensure_wal(conn: sqlite3.Connection, tries: int = 100) -> None:
    """Switch the registry to WAL once (the mode is stored in the file). Switching needs an exclusive
    lock that SQLite does not wait for: two processes opening a new registry at once (DDP ranks) got
    'database is locked'. The loser waits and finds the mode already set."""
    for _ in range(tries):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    conn.execute("PRAGMA journal_mode=WAL")


class RunStore:
    """The SQLite index of runs in a workspace."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else workspace_dir()
        self.runs_dir = self.root / "runs"
        self.db_path = self.root / "runs.db"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with self._conn() as c:
            c.execute(_SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            _ensure_wal(conn)
            conn.row_factory = sqlite3.Row
            yield conn
            conn.commit()
        finally:
            conn.close()

    def _row(self, r: sqlite3.Row) -> Run:
        return Run(
            id=r["id"], name=r["name"], command=r["command"], model_key=r["model_key"], status=r["status"],
            created=r["created"], started=r["started"], finished=r["finished"], dir=Path(r["run_dir"]),
            parent=r["parent"], config=json.loads(r["config"]), summary=json.loads(r["summary"] or "{}"),
            error=r["error"], pid=r["pid"], nprocs=r["nprocs"] or 1,
        )

    def create(self, cfg: RunConfig, status: str = "queued", nprocs: int = 1, parent: str | None = None) -> Run:
        """A new run folder (with config.json) and its registry row, created together."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{cfg.command}-{cfg.produces}-{uuid.uuid4().hex[:4]}"
        folder = self.runs_dir / run_id
        # Never a half run folder, and never over another run's (ids are unique; create_dir refuses to replace).
        create_dir(folder, lambda tmp: write_json_atomic(tmp / "config.json", cfg.to_dict()))
        try:
            with self._conn() as c:
                c.execute(
                    "INSERT INTO runs (id, name, command, model_key, status, created, run_dir, parent, config, nprocs)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (run_id, cfg.name, cfg.command, cfg.produces, status, time.time(), str(folder), parent,
                     json.dumps(cfg.to_dict()), nprocs),
                )
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.get(run_id)

    def get(self, run_id: str) -> Run:
        with self._conn() as c:
            r = c.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"no run {run_id!r} in {self.db_path}")
        return self._row(r)

    def find(self, ref: str) -> Run:
        """A run by id, unique id prefix, or folder path."""
        p = Path(ref)
        if p.is_dir():
            ref = p.name
        try:
            return self.get(ref)
        except KeyError:
            with self._conn() as c:
                rows = c.execute("SELECT * FROM runs WHERE id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) == 1:
                return self._row(rows[0])
            raise

    def list(self, status: str | None = None, command: str | None = None) -> list[Run]:
        q, args = "SELECT * FROM runs", []
        conds = []
        if status:
            conds.append("status = ?")
            args.append(status)
        if command:
            conds.append("command = ?")
            args.append(command)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        with self._conn() as c:
            rows = c.execute(q + " ORDER BY created DESC", args).fetchall()
        return [self._row(r) for r in rows]

    def update(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "started", "finished", "summary", "error", "pid", "name", "nprocs"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {bad}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        if "summary" in fields and not isinstance(fields["summary"], str):
            fields["summary"] = json.dumps(fields["summary"], default=str)
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        with self._conn() as c:
            c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(run.dir, ignore_errors=True)
