"""Five concurrent Compare sessions: each gets its own result, the models are loaded once, memory stays bounded."""

from __future__ import annotations

import gzip
import threading

import psutil

from tests.ui.apptest import open_page, texts


def test_five_concurrent_sessions(workspace_with_models, monkeypatch):
    from streamlit.runtime.scriptrunner import script_cache
    from ui import models as ui_models

    # A real server shares one ScriptCache (with a lock) between sessions; each AppTest makes its own,
    # and CPython 3.11 can fail compiling in several threads at once ("AST constructor recursion depth
    # mismatch"). Serialise compilation as the server does, so the test is about our code.
    compile_lock = threading.Lock()
    real_get = script_cache.ScriptCache.get_bytecode

    def locked_get(self, path):
        with compile_lock:
            return real_get(self, path)

    monkeypatch.setattr(script_cache.ScriptCache, "get_bytecode", locked_get)

    ui_models._load.clear()
    loads: list[str] = []
    real = ui_models.load_model
    monkeypatch.setattr(ui_models, "load_model", lambda folder, name=None: loads.append(folder) or real(folder, name))
    demo = workspace_with_models / "data" / "demo" / "kaggle" / "ct_scans"
    scans = sorted(demo.glob("*.nii"))[:5]
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    results: dict[int, str] = {}
    errors: list[str] = []

    sessions = []
    for _ in range(5):  # five browser sessions open the page (AppTest sets its page up in this thread)
        at = open_page("views/compare.py", timeout=300)
        at.segmented_control(key="cmp_mode").set_value("Upload").run()
        sessions.append(at)

    def session(k: int) -> None:
        try:
            at = sessions[k]
            at.file_uploader(key="cmp_upload").upload(f"scan{k}.nii.gz", gzip.compress(scans[k].read_bytes())).run()
            if at.exception:
                errors.append(str(at.exception))
                return
            table = next(d.value for d in at.dataframe if "patient P(severe)" in d.value.columns)
            results[k] = table.to_csv(index=False) + texts(at).split("Read ")[0]
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=session, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert len(results) == 5
    # each session computed its own scan: five different patient-level tables (different scans, no cross-talk)
    assert len(set(results.values())) == 5
    assert sorted(loads) == sorted(set(loads)) and len(loads) == 4  # each model loaded once, shared by all five
    growth_mb = (proc.memory_info().rss - rss0) / 2**20
    print(f"RSS growth over five sessions: {growth_mb:.0f} MB")
    assert growth_mb < 2048
