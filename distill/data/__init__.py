"""Datasets: loaders (yolo.py, coco.py, dataset.py), augmentations (transforms.py), torch
datasets (torch_dataset.py) and the synthetic benchmark generator (synth.py)."""
