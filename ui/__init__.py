"""Streamlit glue: cached loaders, widgets and pure figure/image builders used by the pages."""
