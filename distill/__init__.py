"""Understudy offline part: data, models, training, distillation, evaluation, export."""
