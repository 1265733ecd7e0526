"""Install onnxruntime in one click: pip run by QGIS's own Python, in a QgsTask.

The message bar that says onnxruntime is missing or too old for the model offers an
"Install" button (:func:`offer_install`). pip runs as a separate process
(:class:`InstallTask`): a download takes a while, and QGIS stays usable, shows the task in its
task bar and can cancel it. On success the folder goes on ``sys.path`` and the caller carries
on (opens the panel, loads the model) without a restart; an onnxruntime that was already
imported cannot be replaced inside a running QGIS, so that case asks for a restart. On
failure the user gets one line with the exact command, to run by hand, and pip's last lines,
which say why (no network, no wheel for this Python, ...).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.gui import QgisInterface
from qgis.PyQt.QtWidgets import QPushButton

from .dependencies import RuntimeProblem, deps_dir, install_command, show_command, use_deps

# pip's lines quoted in a failure message: the error and its context, not the whole log.
PIP_TAIL_LINES = 3


class InstallTask(QgsTask):
    """Runs ``command`` (a pip install into ``target``), then ``on_done()`` with ``target`` on
    ``sys.path``, or ``on_error(line)``; both on the main thread. Cancelling ends pip."""

    def __init__(
        self,
        command: list[str],
        target: Path,
        on_done: Callable[[], None],
        on_error: Callable[[str], None],
    ) -> None:
        super().__init__("geosam: installing onnxruntime", QgsTask.Flag.CanCancel)
        self.command = command
        self.target = target
        self.on_done = on_done
        self.on_error = on_error
        self.output: list[str] = []
        self.returncode: int | None = None

    def run(self) -> bool:
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                # no console window flashing up on Windows
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except OSError as error:
            self.output.append(str(error))
            return False
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            # pip gives no total: each line moves the bar a little, short of the end
            self.setProgress(min(95.0, self.progress() + 5.0))
            if self.isCanceled():
                process.terminate()
                break
        self.returncode = process.wait()
        return self.returncode == 0 and not self.isCanceled()

    def finished(self, result: bool) -> None:
        if result:
            use_deps(self.target)
            self.on_done()
        elif not self.isCanceled():
            self.on_error(self.failure())

    def failure(self) -> str:
        """One line: the command, how it ended and pip's last lines."""
        ended = "could not start" if self.returncode is None else f"exited {self.returncode}"
        lines = [line.strip() for line in self.output if line.strip()][-PIP_TAIL_LINES:]
        tail = " / ".join(lines) or "no output"
        return (
            f"installing onnxruntime failed: {show_command(self.command)} {ended}: {tail}. "
            "Run the command yourself, then restart QGIS"
        )


def start_install(
    minimum: str | None, on_done: Callable[[], None], on_error: Callable[[str], None]
) -> InstallTask:
    """Queue the install of onnxruntime (``>= minimum``) into :func:`deps_dir` in QGIS's task
    manager; the task is returned so callers (and tests) can follow it."""
    target = deps_dir()
    task = InstallTask(install_command(minimum, target), target, on_done, on_error)
    QgsApplication.taskManager().addTask(task)
    return task


class InstallOffer:
    """A problem shown in the message bar with an "Install" button (:meth:`install`, also
    what the button does); once installed, a success line and ``on_installed()`` (not when a
    restart is needed first). ``task`` is the install under way, for whoever follows it."""

    def __init__(
        self, iface: QgisInterface, problem: RuntimeProblem, on_installed: Callable[[], None]
    ) -> None:
        self.bar = iface.messageBar()
        self.problem = problem
        self.on_installed = on_installed
        self.task: InstallTask | None = None
        self.item = self.bar.createMessage("geosam", problem.message)
        button = QPushButton("Install")
        button.clicked.connect(self.install)
        self.item.layout().addWidget(button)
        self.bar.pushWidget(self.item, Qgis.MessageLevel.Critical)

    def install(self) -> None:
        self.bar.popWidget(self.item)
        self.task = start_install(self.problem.minimum, self.installed, self.failed)

    def installed(self) -> None:
        restart = ": restart QGIS to use it" if self.problem.restart else ""
        self.bar.pushMessage(
            "geosam",
            f"onnxruntime installed into {deps_dir()}{restart}",
            level=Qgis.MessageLevel.Success,
        )
        if not self.problem.restart:
            self.on_installed()

    def failed(self, line: str) -> None:
        self.bar.pushMessage("geosam", line, level=Qgis.MessageLevel.Critical)
