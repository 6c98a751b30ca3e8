"""CT Severity Studio library: imaging, networks, checkpoints, inference, explanation, efficiency.

Imports nothing of the app (no streamlit, no ui, no training): the app and the training
pipeline are built on top of it.
"""

__version__ = "0.1.0"
