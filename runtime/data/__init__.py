"""Labelled datasets without torch: record types (records.py), the YOLO and COCO readers
(yolo.py, coco.py), the dataset YAML / COCO ground truth (dataset.py), and the decode check
and report of damaged inputs (verify.py). Used by `understudy bench --data` on the device
and by the offline torch datasets in distill.data."""
