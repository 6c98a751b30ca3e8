"""CT Severity Studio: Streamlit entry point. Only pages that work are listed."""

from __future__ import annotations

import logging

import streamlit as st

from ctmodels.work_slots import freeze_imported_heap, tune_allocator
from ui.navigation import PAGES

tune_allocator()  # first: the server's allocator settings apply to every session thread (idempotent on reruns)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="CT Severity Studio", page_icon=":material/pulmonology:", layout="wide")

nav = st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(PAGES)])
with st.sidebar:
    st.caption("CT Severity Studio · research software, not for diagnostic use.")
nav.run()
freeze_imported_heap()  # once a page has imported its libraries: Streamlit's collection after each run skips them
