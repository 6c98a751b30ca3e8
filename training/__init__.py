"""Training pipeline: datasets → training, pruning, distillation → evaluation → run registry.

Never imports streamlit; the app launches it as a subprocess (``python -m training``).
"""
