"""From dataset folders to labelled, preprocessed slices with patient splits, and the classical hand features."""
