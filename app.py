"""CT Severity Studio: Streamlit entry point. Only pages that work are listed."""

from __future__ import annotations

import logging

import streamlit as st

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="CT Severity Studio", page_icon=":material/pulmonology:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/data_browser.py", title="Data Browser", icon=":material/folder_open:"),
    st.Page("views/training.py", title="Training", icon=":material/model_training:"),
    st.Page("views/efficiency.py", title="Efficiency", icon=":material/speed:"),
]

nav = st.navigation(PAGES)
with st.sidebar:
    st.caption("CT Severity Studio · research software, not for diagnostic use.")
nav.run()
