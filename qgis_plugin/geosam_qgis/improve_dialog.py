"""The before/after of an improvement, and the choice: switch to the new model or keep the
old one."""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from .improve import describe_report


class ImproveResultDialog(QDialog):
    """Accepted: use the new model; rejected: keep the old one."""

    def __init__(self, report: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("geosam: the model after improving")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        # lines as describe_report breaks them: a wrapped label's height is misjudged
        self.summary = QLabel(describe_report(report))
        layout.addWidget(self.summary)
        where = QLabel(f"New model: {report['new_model']}\nOld model: {report['old_model']}")
        where.setWordWrap(True)
        layout.addWidget(where)
        buttons = QDialogButtonBox()
        self.use_button = buttons.addButton(
            "Use the new model", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.keep_button = buttons.addButton(
            "Keep the old model", QDialogButtonBox.ButtonRole.RejectRole
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
