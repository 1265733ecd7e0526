"""Slow steps (loading a model, encoding a window) in QGIS's task manager, off the main thread.

An encoder run takes seconds on a CPU (docs/design-notes.md); on the main thread it would
freeze the map. A :class:`BackgroundTask` shows in QGIS's task bar with its
progress, can be cancelled there, and hands its result back on the main thread through
QgsTask.finished, where the caller may touch widgets, layers and the embedding cache.

onnxruntime cannot be interrupted inside one run, so cancelling lets the running step finish
and then drops its result: the callback is never called for a cancelled task.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsFeedback, QgsMessageLog, QgsTask
from qgis.PyQt import sip

from .runtime.errors import GeosamError

# The work of a task, given the task's setProgress (0-100).
Job = Callable[[Callable[[float], None]], Any]


def running(task: QgsTask | None) -> bool:
    """Whether ``task`` was started and has not ended; the task manager deletes finished
    tasks, and the Python wrapper outlives them."""
    return (
        task is not None
        and not sip.isdeleted(task)
        and task.status() not in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated)
    )


class BackgroundTask(QgsTask):
    """Runs ``job(progress)`` in a worker thread; ``on_done(result)`` or ``on_error(message)``
    afterwards on the main thread. GeosamError messages are shown as they are; anything else
    is a bug, and its traceback goes to QGIS's log (panel "geosam")."""

    def __init__(
        self,
        description: str,
        job: Job,
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None],
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.job = job
        self.on_done = on_done
        self.on_error = on_error
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> bool:
        try:
            self.result = self.job(self.setProgress)
        except Exception as error:  # handed to the main thread, which reports it
            self.error = error
            return False
        return not self.isCanceled()

    def finished(self, result: bool) -> None:
        if result:
            self.on_done(self.result)
        elif isinstance(self.error, GeosamError):
            self.on_error(str(self.error))
        elif self.error is not None:
            QgsMessageLog.logMessage(
                "".join(traceback.format_exception(self.error)),
                "geosam",
                Qgis.MessageLevel.Critical,
            )
            self.on_error(f"{self.description()} failed: {self.error!r} (details in the log)")


class FeedbackTask(BackgroundTask):
    """A :class:`BackgroundTask` whose job takes a QgsFeedback, as the Processing-style loops
    (:func:`.auto_mode.segment_all`) do: the feedback's progress is the task's, and
    cancelling the task cancels the feedback, so such a loop stops between two windows."""

    def __init__(
        self,
        description: str,
        job: Callable[[QgsFeedback], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None],
    ) -> None:
        super().__init__(description, lambda progress: job(self.feedback), on_done, on_error)
        self.feedback = QgsFeedback()
        self.feedback.progressChanged.connect(self.setProgress)

    def cancel(self) -> None:
        self.feedback.cancel()
        super().cancel()
