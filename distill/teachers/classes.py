"""A teacher's classes mapped onto the student's by name (:class:`ClassMap`).

A teacher class whose name (after the layout's ``class_map`` renames) is one of the
student's teaches that class; the teacher's other classes are ignored. A student class
the teacher lacks is not taught by it (its dense targets and scores are left out, never
taught as "absent"); the run stops only when the teacher knows none of them."""

from __future__ import annotations

import numpy as np

from runtime.errors import ConfigError


class ClassMap:
    """teacher_index (S,) long: for each student class, its teacher column, or -1."""

    def __init__(
        self,
        teacher: tuple[str, ...],
        student: tuple[str, ...],
        renames: tuple[str, ...] = (),
        source: str = "teacher",
    ) -> None:
        alias = dict(tuple(p.strip() for p in e.split("=")) for e in renames)
        unknown = [t for t in alias if t not in teacher]
        if unknown:
            raise ConfigError(
                f"{source}: class_map names teacher classes {unknown} it does not have "
                f"(its classes: {list(teacher)[:12]}{' ...' if len(teacher) > 12 else ''})"
            )
        as_student = [alias.get(t, t) for t in teacher]
        self.teacher, self.student = tuple(teacher), tuple(student)
        self.teacher_index = np.array(
            [as_student.index(s) if s in as_student else -1 for s in student], np.int64
        )
        if (self.teacher_index < 0).all():
            raise ConfigError(
                f"{source}: none of the data's classes {list(student)} is among the teacher's "
                f"{list(teacher)[:12]}; map them by name (class_map: ['teacher name=student "
                "name']) in a layout file (kd.teacher_layout)"
            )
        self.source = source

    @property
    def taught(self) -> np.ndarray:
        """(S,) bool: the student classes this teacher knows."""
        return self.teacher_index >= 0

    @property
    def complete(self) -> bool:
        """Every student class is taught, each by the teacher column of the same index."""
        return self.taught.all()

    def scores(self, teacher_scores: np.ndarray) -> np.ndarray:
        """(..., C_t) teacher probabilities -> (..., S) over the student's classes (0 where
        the teacher lacks the class)."""
        out = teacher_scores[..., np.maximum(self.teacher_index, 0)]
        if not self.complete:
            out = out * self.taught.astype(out.dtype)
        return out

    def report(self) -> str:
        """One line: which teacher class teaches which student class, what is ignored."""
        pairs = [
            t if t == s else f"{t}->{s}"
            for s, i in zip(self.student, self.teacher_index)
            if i >= 0
            for t in [self.teacher[i]]
        ]
        used = {int(i) for i in self.teacher_index if i >= 0}
        ignored = len(self.teacher) - len(used)
        missing = [s for s, i in zip(self.student, self.teacher_index) if i < 0]
        line = f"teacher classes: {len(pairs)} of the data's {len(self.student)} mapped ("
        line += ", ".join(pairs) + f"), {ignored} teacher class(es) ignored"
        if missing:
            line += f"; not taught by this teacher: {', '.join(missing)}"
        return line
