"""``understudy auto``: choose the student (and the teacher) for a latency budget on a
target backend -- latency screen, teacher screen, distillation and budget gate. See
:mod:`distill.auto.run` and docs/distillation.md ("Automatic choice")."""
