"""``understudy adapt``: a site-specific student from the frames a vehicle saw.

The loop (docs/adapt.md): site frames (shadow-teacher disagreements saved by
``serve --shadow-save-dir``, video files, image folders; :mod:`.sources`) are split by
time (:mod:`.split`), the deployed student is distilled further from its own weights on
teacher pseudo-labels and soft targets of the site frames mixed with replayed original
data (:mod:`.run`, through :func:`distill.distillation.distill`), scored against the
teacher on held-out site frames and on the original val split (:mod:`.evaluate`), and
replaces the deployed student only when the gate says so (:mod:`.gate`); the report is
JSON, Markdown and a PNG (:mod:`.report`).
"""
