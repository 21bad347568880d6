"""Offline datasets: augmentations (transforms.py), torch datasets (torch_dataset.py) and the
synthetic benchmark generator (synth.py). The readers live in runtime.data."""
