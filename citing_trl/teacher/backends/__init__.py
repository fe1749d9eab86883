"""The backends that produce teacher answers."""

from citing_trl.teacher.backends.base import Job, TeacherBackend
from citing_trl.teacher.backends.batch import BatchBackend
from citing_trl.teacher.backends.local import LocalBackend
from citing_trl.teacher.backends.openai import OpenAIBackend

__all__ = ["BatchBackend", "Job", "LocalBackend", "OpenAIBackend", "TeacherBackend"]
