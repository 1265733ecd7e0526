"""The plugin object QGIS loads: a toolbar button, the dock, the map tool, the provider.

``initGui`` registers only what needs no onnxruntime (the button, the Processing provider),
so QGIS starts cleanly without it; the first press of the button checks for onnxruntime and,
when it is missing, offers to install it (:mod:`.installer`) instead of a traceback, and
opens the panel once it is installed.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .dependencies import deps_dir, onnxruntime_problem, use_deps
from .diagnostics import DiagnosticsDialog, diagnostics_text
from .installer import InstallOffer
from .processing.provider import GeosamProvider

ICON = Path(__file__).resolve().parent / "icon.svg"
MENU = "&geosam"


class GeosamPlugin:
    """Created by :func:`geosam_qgis.classFactory`; QGIS calls initGui and unload."""

    def __init__(self, iface: QgisInterface) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.provider: GeosamProvider | None = None
        self.dock = None
        self.tool = None
        self.controller = None
        self.install_offer: InstallOffer | None = None
        self.finder = None
        self.diagnostics_action: QAction | None = None
        self.diagnostics: DiagnosticsDialog | None = None
        self.improve = None

    def initGui(self) -> None:
        if deps_dir().is_dir():  # what the Install button put there in an earlier session
            use_deps(deps_dir())
        self.provider = GeosamProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)
        self.action = QAction(QIcon(str(ICON)), "Segment parcels (geosam)", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.toggled.connect(self.toggle)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        # also in the menu: it must work where the panel cannot open (no onnxruntime)
        self.diagnostics_action = QAction("Diagnostics", self.iface.mainWindow())
        self.diagnostics_action.triggered.connect(self.show_diagnostics)
        self.iface.addPluginToMenu(MENU, self.diagnostics_action)

    def toggle(self, on: bool) -> None:
        """Show the dock and pick the map tool, or put both away."""
        if on and not self.open_dock():
            self.action.setChecked(False)
            return
        if self.dock is not None:
            self.dock.setVisible(on)
            self.dock.tool_button.setChecked(on)

    def open_dock(self) -> bool:
        """Create the dock, map tool and controller on first use; False if onnxruntime is
        missing (the message bar then offers to install it, and opens the dock after)."""
        if self.dock is not None:
            return True
        problem = onnxruntime_problem()
        if problem is not None:
            self.install_offer = InstallOffer(
                self.iface, problem, lambda: self.action.setChecked(True)
            )
            return False
        # Only now: these modules load onnxruntime through the bundled runtime.
        from .controller import SegmentController
        from .dock import SegmentDock
        from .find_in_view import FindInView
        from .improve_action import ImproveAction
        from .map_tool import PromptMapTool

        canvas = self.iface.mapCanvas()
        self.dock = SegmentDock(self.iface.mainWindow())
        self.tool = PromptMapTool(canvas)
        self.controller = SegmentController(self.iface, self.dock, self.tool)
        self.finder = FindInView(self.controller)
        self.dock.diagnostics_button.clicked.connect(self.show_diagnostics)
        self.improve = ImproveAction(self.iface, self.dock)
        self.dock.tool_button.toggled.connect(self.use_tool)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        return True

    def show_diagnostics(self) -> DiagnosticsDialog:
        """The Diagnostics dialog for the panel's model and cache (if the panel is open)."""
        folder = self.dock.model_folder() if self.dock is not None else ""
        cache = None
        if self.controller is not None:
            used = self.controller.cache
            cache = (len(used), used.nbytes, used.max_bytes)
        self.diagnostics = DiagnosticsDialog(
            diagnostics_text(folder, cache), self.iface.mainWindow()
        )
        self.diagnostics.show()
        return self.diagnostics

    def use_tool(self, on: bool) -> None:
        canvas = self.iface.mapCanvas()
        if on:
            canvas.setMapTool(self.tool)
        elif canvas.mapTool() is self.tool:
            canvas.unsetMapTool(self.tool)

    def unload(self) -> None:
        if self.controller is not None:
            self.finder.unload()
            self.controller.unload()
            self.use_tool(False)
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
        if self.diagnostics_action is not None:
            self.iface.removePluginMenu(MENU, self.diagnostics_action)
            self.diagnostics_action.deleteLater()
        self.dock = self.tool = self.controller = self.finder = self.improve = self.provider = None
        self.action = self.diagnostics_action = None
