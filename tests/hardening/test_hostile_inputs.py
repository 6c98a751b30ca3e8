"""≥ 200 malformed inputs through read_any (in a child process limited to 2 GB, 10 s per input) and through
the Compare page: each gives a typed error or a correct read, never an unhandled exception, a hang or a
memory blow-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hardening.corpus import build
from tests.ui.apptest import open_page

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys, time
    sys.path.insert(0, {repo!r})
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    from ctmodels.imaging import ImageReadError, read_any

    class Hang(Exception):
        pass

    def alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    folder = {folder!r}
    out = {{}}
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        t0 = time.time()
        signal.alarm(10)
        try:
            vol = read_any(data, name=name.split("__", 1)[1])
            res = "ok:" + "x".join(map(str, vol.shape))
        except ImageReadError as exc:
            res = "typed:" + type(exc).__name__ + ":" + str(exc)
        except Hang:
            res = "HANG"
        except MemoryError:
            res = "MEMORY"
        except BaseException as exc:
            res = "UNHANDLED:" + type(exc).__name__ + ":" + str(exc)[:200]
        finally:
            signal.alarm(0)
        out[name] = [res, round(time.time() - t0, 2)]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_phantoms) -> Path:
    seed_dicom = sorted((small_phantoms / "dicom" / "PH0001").glob("*.dcm"))[5]
    seed_nifti = next((small_phantoms / "kaggle" / "ct_scans").glob("*.nii"))
    seed_png = next((small_phantoms / "png").glob("*/*.png"))
    folder = tmp_path_factory.mktemp("corpus")
    items = build(seed_dicom, seed_nifti, seed_png)
    for k, (name, data) in enumerate(items):
        (folder / f"{k:03d}__{name}").write_bytes(data)
    return folder


def test_corpus_through_read_any(corpus):
    assert len(list(corpus.iterdir())) >= 200
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), folder=str(corpus))],
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    outcomes = json.loads(res.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in outcomes.items() if not (v[0].startswith("ok:") or v[0].startswith("typed:"))}
    assert not bad, bad
    slow = {k: v for k, v in outcomes.items() if v[1] > 10}
    assert not slow, slow
    typed = sum(v[0].startswith("typed:") for v in outcomes.values())
    assert typed >= 150  # most of the corpus is refused with a reason
    for name in ("good.png", "good.nii", "noext", "upper.DCM", "sixteen.png", "rgba.png", "cmyk.jpg"):
        hit = next(v for k, v in outcomes.items() if k.endswith("__" + name))
        assert hit[0].startswith("ok:"), (name, hit)


@pytest.mark.slow
def test_corpus_through_the_compare_page(corpus, workspace_with_models):
    at = open_page("views/compare.py")
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    for f in sorted(corpus.iterdir()):
        at.file_uploader(key="cmp_upload").upload(f.name.split("__", 1)[1], f.read_bytes()).run()
        assert not at.exception, (f.name, at.exception)
        assert at.error or at.image, f.name  # an error message or the results


def test_corpus_sample_through_the_compare_page(corpus, workspace_with_models):
    at = open_page("views/compare.py")
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    files = sorted(corpus.iterdir())[::8]
    for f in files:
        at.file_uploader(key="cmp_upload").upload(f.name.split("__", 1)[1], f.read_bytes()).run()
        assert not at.exception, (f.name, at.exception)
        assert at.error or at.image, f.name
