"""The teaching page: Slicer's views and Segment Editor in a browser, over one :class:`~.session.WebSession`.

Built on Kitware's trame-slicer (Slicer's MRML scene, slice and 3D views, Segment Editor effects,
streamed to the page as images). This module is wiring only: every scene change goes through the
session (and so through the Slicer module's MRML layer and the engine's pipeline). One server
process serves one session; :mod:`.launcher` starts one per student.

The engine runs in a worker thread so the views stay live; its progress reaches the page through
a polling task on the server's event loop, and Cancel sets an event the engine checks between
slices. The scene is touched only on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen, no X server needed

from trame.app import get_server  # noqa: E402
from trame.ui.vuetify3 import VAppLayout  # noqa: E402
from trame.widgets import html  # noqa: E402
from trame.widgets import vuetify3 as v3  # noqa: E402
from trame_server.utils.asynchronous import create_task  # noqa: E402
from trame_server.utils.typed_state import TypedState  # noqa: E402
from trame_slicer import module as trame_slicer_module  # noqa: E402
from trame_slicer.app.ui.load_volume_ui import LoadVolumeButton, LoadVolumeItemsState  # noqa: E402
from trame_slicer.core import LayoutManager, SlicerApp  # noqa: E402
from trame_slicer.rca_view import register_rca_factories  # noqa: E402
from trame_slicer.segmentation import (  # noqa: E402
    SegmentationEffectErase,
    SegmentationEffectIslands,
    SegmentationEffectNoTool,
    SegmentationEffectPaint,
    SegmentationEffectThreshold,
)
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition  # noqa: E402
from undo_stack import UndoStack  # noqa: E402

from AnomalyDetectionLib.catalog import DEVICES, SCORE_HELP, read_card_file, scores_for_card  # noqa: E402
from AnomalyDetectionLib.errors import AnomalyDetectionError, Cancelled  # noqa: E402
from AnomalyDetectionMRML import heat_colour_choices, set_map_display  # noqa: E402
from AnomalyDetectionMRML.display import map_values  # noqa: E402

from .session import DEFAULT_MAX_UPLOAD_MB, EXPORT_SUFFIXES, WebSession  # noqa: E402

__all__ = ["EFFECTS", "WebApp"]

#: Segment Editor effects offered in the page (label -> trame-slicer effect).
EFFECTS = {
    "None": SegmentationEffectNoTool,
    "Paint": SegmentationEffectPaint,
    "Erase": SegmentationEffectErase,
    "Threshold": SegmentationEffectThreshold,
    "Islands": SegmentationEffectIslands,
}
MAIN_LAYOUT = "views"
#: The teaching grid's first panel: the model's reconstruction of the scan (not the score of that name).
REBUILT_PANEL = "model's reconstruction"
TEACHING_LAYOUT = "teaching"
#: How often the page's progress bar is refreshed while the engine runs (seconds).
PROGRESS_PERIOD_S = 0.25


def _rss_mb() -> float:
    """This process's resident memory (MB), shown in the page and measured for the README."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _main_layout() -> Layout:
    """Axial, coronal and sagittal slices with the 3D view: Slicer's four-up layout."""
    return Layout(LayoutDirection.Horizontal, [
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view()]),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.sagittal_view(), ViewLayoutDefinition.threed_view()]),
    ])


def _teaching_tag(name: str) -> str:
    return "teach_" + "".join(c if c.isalnum() else "_" for c in name)


def _teaching_layout(panels: Sequence[str]) -> Layout:
    """One axial view per panel (the reconstruction and each score's map), in rows of three."""
    views = [ViewLayoutDefinition.slice_view("Axial", label=_teaching_tag(p), color="#8888ff") for p in panels]
    rows = [Layout(LayoutDirection.Horizontal, views[i:i + 3]) for i in range(0, len(views), 3)]
    return Layout(LayoutDirection.Vertical, rows)


class WebApp:
    """The page of one session: state, controls and views bound to a :class:`WebSession`."""

    def __init__(self, server=None, model_paths: Optional[List[Path]] = None, device: str = "auto",
                 max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
        self.server = server or get_server(client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.state, self.ctrl = self.server.state, self.server.controller
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layouts = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layouts.register_layout(MAIN_LAYOUT, _main_layout())
        self.layouts.set_layout(MAIN_LAYOUT)
        self.undo_stack = UndoStack(undo_limit=20)
        self.slicer.segmentation_editor.set_undo_stack(self.undo_stack)
        self.undo_stack.index_changed.connect(lambda *_: self._after_edit())
        kwargs = {"model_paths": list(model_paths)} if model_paths else {}
        self.session = WebSession(self.slicer.scene, max_upload_mb=max_upload_mb, **kwargs)
        self._cancel = threading.Event()
        self._task = None
        self._set_defaults(device)
        self._bind()
        self.ui = self._build_ui()

    # -------------------------------------------------------------------------------- state

    def _set_defaults(self, device: str) -> None:
        s = self.state
        s.trame__title = "AnomalyDetection"
        s.models = [p.stem for p in self.session.model_paths]
        s.model_files = {p.stem: str(p) for p in self.session.model_paths}
        s.model = s.models[0] if s.models else None
        s.scores, s.score = [], None
        self._fill_scores(s.model)
        s.devices, s.device = list(DEVICES), device
        s.busy = False
        s.progress, s.progress_message = 0.0, ""
        s.error, s.info, s.warnings = "", "", []
        s.scan_name, s.has_truth, s.has_result = "", False, False
        s.threshold, s.threshold_min, s.threshold_max = 0.0, 0.0, 1.0
        s.calibrated_threshold = 0.0
        s.segment_voxels = 0
        s.opacity = 0.6
        s.colours, s.colour = {}, None
        # not "window": a state name hides the browser's global of that name in the page's expressions
        s.map_window, s.map_window_min, s.map_window_max = [0.0, 1.0], 0.0, 1.0
        s.effect = "None"
        s.effects = list(EFFECTS)
        s.brush_mm = 8.0
        s.can_undo = s.can_redo = False
        s.metrics, s.dice_plot = [], ""
        s.sample_answer = ""
        s.teaching = False
        s.teaching_panels = []
        s.detect_seconds = 0.0
        s.memory_mb = round(_rss_mb())

    def _fill_scores(self, model: Optional[str]) -> None:
        card = read_card_file(self.state.model_files[model]) if model in (self.state.model_files or {}) else None
        self.state.scores = scores_for_card(card) if card else []
        default = (card or {}).get("default_score")
        self.state.score = default if default in self.state.scores else (self.state.scores or [None])[0]

    def _bind(self) -> None:
        self.state.change("model")(lambda model, **_: self._fill_scores(model))
        self.state.change("opacity")(lambda opacity, **_: self._set_opacity(opacity))
        self.state.change("colour", "map_window")(lambda colour, map_window, **_: self._restyle_map(colour, map_window))
        self.state.change("threshold")(lambda threshold, **_: self._on_threshold(threshold))
        self.state.change("effect")(lambda effect, **_: self._on_effect(effect))
        self.state.change("brush_mm")(lambda brush_mm, **_: self._on_brush(brush_mm))

    # ------------------------------------------------------------------------------- inputs

    def _guard(self, action, *args) -> bool:
        """Run a scene action; an engine error becomes the page's one-line error, the scene stays."""
        self.state.error = ""
        try:
            action(*args)
        except AnomalyDetectionError as exc:
            self.state.error = str(exc)
            return False
        return True

    def load_sample(self) -> None:
        if not self.state.busy and self._guard(self.session.load_sample):
            self._show_scan()

    async def on_upload(self, files: List[Dict[str, Any]]) -> None:
        """Files from the upload button (trame-slicer's chunked loader): the first one is the scan."""
        if not files or self.state.busy:
            return
        with self.state:
            if self._guard(self.session.load_upload, files[0].get("name", "upload"), _content(files[0])):
                self._show_scan()

    async def on_truth_upload(self, files: List[Dict[str, Any]]) -> None:
        if not files:
            return
        with self.state:
            if self._guard(self.session.load_truth_upload, files[0].get("name", "truth"), _content(files[0])):
                self.state.has_truth = True
                self.state.info = f"reference segmentation {files[0].get('name')} loaded"
                self._show_outputs()

    def _show_scan(self) -> None:
        s = self.state
        s.scan_name = self.session.scan_node.GetName()
        s.has_truth = self.session.truth_node is not None
        s.has_result = False
        s.metrics, s.dice_plot, s.warnings, s.sample_answer, s.info = [], "", [], "", ""
        s.teaching, s.teaching_panels = False, []
        self.layouts.set_layout(MAIN_LAYOUT)
        display = self.slicer.display_manager
        display.show_volume_in_slice_background(self.session.scan_node)
        display.show_volume_in_slice_foreground(None)
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        display.reset_views()
        s.memory_mb = round(_rss_mb())

    # ---------------------------------------------------------------------------- detection

    def detect(self, teaching: bool = False) -> None:
        """Start a detection in the background (the page stays live); ``teaching``: every score's map."""
        if self.state.busy:
            return
        self.state.error = ""
        scores = [s for s in self.state.scores if s != self.state.score] if teaching else []
        try:
            prepared = self.session.prepare(self.state.model, self.state.score, self.state.device, scores)
        except AnomalyDetectionError as exc:
            self.state.error = str(exc)
            return
        self._cancel.clear()
        self.state.busy, self.state.progress, self.state.progress_message = True, 0.0, "starting"
        self._task = create_task(self._run(prepared))

    def cancel(self) -> None:
        self._cancel.set()
        self.state.progress_message = "cancelling..."

    async def _run(self, prepared) -> None:
        latest = {"fraction": 0.0, "message": "starting"}

        def progress(fraction: float, message: str) -> None:
            latest.update(fraction=float(fraction), message=message)

        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, WebSession.compute, prepared, progress, self._cancel.is_set)
        while not future.done():
            await asyncio.sleep(PROGRESS_PERIOD_S)
            with self.state:
                self.state.progress = round(100 * latest["fraction"], 1)
                self.state.progress_message = latest["message"]
        with self.state:
            try:
                detection = future.result()
                self.session.apply(detection)
            except Cancelled:
                self.state.info = "detection cancelled; the previous result is unchanged"
            except AnomalyDetectionError as exc:
                self.state.error = str(exc)
            except Exception as exc:  # a bug: say so in the page, keep serving
                self.state.error = f"internal error: {type(exc).__name__}: {exc}"
            else:
                self.state.detect_seconds = round(time.perf_counter() - start, 1)
                self._show_outputs()
            finally:
                self.state.busy, self.state.progress = False, 0.0
                self.state.progress_message = ""
                self.state.memory_mb = round(_rss_mb())

    def _show_outputs(self) -> None:
        outputs = self.session.outputs
        if outputs is None:
            return
        s = self.state
        report = outputs.report
        s.has_result = True
        s.warnings = list(report.get("warnings") or [])
        percentile = report.get("sample_percentile")
        s.sample_answer = (f"Scan as a whole: sample score above {percentile:g} % of the "
                           f"{report.get('sample_normals')} normal calibration scans" if percentile is not None
                           else "Scan as a whole: this model's card holds no calibration scans to compare with")
        low, high = self.session.threshold_range()
        s.threshold_min, s.threshold_max = low, max(high, low + 1e-6)
        s.calibrated_threshold = float(report["threshold"])
        s.threshold = float(self.session.threshold)
        s.segment_voxels = self.session.segment_voxels()
        display = self.slicer.display_manager
        display.show_volume_in_slice_background(self.session.scan_node)
        display.show_volume_in_slice_foreground(outputs.map_node)
        self._set_opacity(s.opacity)
        map_display = outputs.map_node.GetDisplayNode()
        s.colours = heat_colour_choices(self.slicer.scene)
        s.colour = map_display.GetColorNodeID()
        values = map_values(outputs.map_node)
        s.map_window_min, s.map_window_max = float(values.min()), float(max(values.max(), values.min() + 1e-6))
        s.map_window = [float(map_display.GetWindowLevelMin()), float(map_display.GetWindowLevelMax())]
        editor = self.slicer.segmentation_editor
        editor.set_active_segmentation(outputs.segmentation_node, outputs.map_node)
        editor.show_3d(True)
        s.effect = "None"
        if self.session.teaching:
            self._show_teaching()
        else:
            s.teaching, s.teaching_panels = False, []
            self.layouts.set_layout(MAIN_LAYOUT)
            self._segment_in_every_view()

    def _show_teaching(self) -> None:
        """Every score's map and the reconstruction side by side, the truth outlined on each."""
        outputs = self.session.outputs
        panels = [REBUILT_PANEL, self.state.score, *outputs.score_nodes]
        self.layouts.register_layout(TEACHING_LAYOUT, _teaching_layout(panels))
        self.layouts.set_layout(TEACHING_LAYOUT)
        maps = {self.state.score: outputs.map_node, **outputs.score_nodes}
        views = {v.get_singleton_tag(): v for v in self.slicer.view_manager.get_slice_views()}
        for panel in panels:
            view = views.get(_teaching_tag(panel))
            if view is None:
                continue
            if panel == REBUILT_PANEL:
                view.set_background_volume_id(outputs.reconstruction_node.GetID())
                view.set_foreground_volume_id(None)
            else:
                view.set_background_volume_id(self.session.scan_node.GetID())
                view.set_foreground_volume_id(maps[panel].GetID())
                view.set_foreground_opacity(float(self.state.opacity))
            view.reset_view()
        # the panels show the truth's outline only: the anomaly segment stays in the four views
        main_views = [v.get_view_node_id() for tag, v in views.items() if not tag.startswith(_teaching_tag(""))]
        segment_display = outputs.segmentation_node.GetDisplayNode()
        if segment_display is not None:
            segment_display.SetViewNodeIDs(main_views)
        self.state.teaching = True
        self.state.teaching_panels = [
            {"name": p, "text": ("What the model takes for the normal scan: the input as the model rebuilds it."
                                 if p == REBUILT_PANEL else SCORE_HELP.get(p, ""))} for p in panels]

    def show_views(self) -> None:
        """Back from the teaching grid to the four views."""
        self.layouts.set_layout(MAIN_LAYOUT)
        self.state.teaching = False
        self._segment_in_every_view()

    def _segment_in_every_view(self) -> None:
        outputs = self.session.outputs
        display = outputs.segmentation_node.GetDisplayNode() if outputs is not None else None
        if display is not None:
            display.RemoveAllViewNodeIDs()

    # ------------------------------------------------------------------------ threshold, edit

    def _set_opacity(self, opacity: float) -> None:
        for view in self.slicer.view_manager.get_slice_views():
            view.set_foreground_opacity(float(opacity))

    def _restyle_map(self, colour: Optional[str], window) -> None:
        """Colour table and display window of every shown map (the teaching panels' too)."""
        outputs = self.session.outputs
        if outputs is None:
            return
        for node in [outputs.map_node, *outputs.score_nodes.values()]:
            set_map_display(node, colour or None, tuple(window) if node is outputs.map_node and window else None)

    def _on_threshold(self, threshold: float) -> None:
        if self.session.outputs is None or threshold is None or self.state.busy:
            return
        if self.session.threshold is not None and float(threshold) == self.session.threshold:
            return
        self.state.segment_voxels = self.session.set_threshold(float(threshold))
        self.undo_stack.clear()  # edits before the threshold moved belong to another segment
        self._after_edit()

    def reset_threshold(self) -> None:
        self.state.threshold = self.state.calibrated_threshold

    def _on_effect(self, effect: str) -> None:
        editor = self.slicer.segmentation_editor
        if editor.active_segmentation is None:
            return
        active = editor.set_active_effect_type(EFFECTS.get(effect, SegmentationEffectNoTool))
        if effect == "Threshold" and active is not None:  # start from the slider's threshold, on the map
            active.set_threshold_min_max_values((float(self.state.threshold), float(self.state.threshold_max)))
        if effect in ("Paint", "Erase"):
            self._on_brush(self.state.brush_mm)

    def _on_brush(self, brush_mm: float) -> None:
        from trame_slicer.segmentation.paint_effect_parameters import BrushDiameterMode

        effect = self.slicer.segmentation_editor.active_effect
        if isinstance(effect, (SegmentationEffectPaint, SegmentationEffectErase)):
            effect.set_brush_diameter(float(brush_mm), BrushDiameterMode.Absolute)

    def apply_threshold_effect(self) -> None:
        effect = self.slicer.segmentation_editor.active_effect
        if isinstance(effect, SegmentationEffectThreshold):
            effect.apply()

    def keep_largest_island(self) -> None:
        effect = self.slicer.segmentation_editor.active_effect
        if isinstance(effect, SegmentationEffectIslands):
            effect.keep_largest_island()

    def remove_small_islands(self) -> None:
        effect = self.slicer.segmentation_editor.active_effect
        if isinstance(effect, SegmentationEffectIslands):
            effect.remove_small_islands()

    def undo(self) -> None:
        if self.undo_stack.can_undo():
            self.undo_stack.undo()

    def redo(self) -> None:
        if self.undo_stack.can_redo():
            self.undo_stack.redo()

    def _after_edit(self) -> None:
        self.state.can_undo, self.state.can_redo = self.undo_stack.can_undo(), self.undo_stack.can_redo()
        if self.session.outputs is not None:
            self.state.segment_voxels = self.session.segment_voxels()

    # ---------------------------------------------------------------------------- evaluation

    def evaluate(self) -> None:
        self.state.error = ""
        try:
            rows, _results, (thresholds, dices) = self.session.evaluate()
        except AnomalyDetectionError as exc:
            self.state.error = str(exc)
            return
        self.state.metrics = [{"metric": name, "value": "n/a" if value != value else f"{value:.4g}"}
                              for name, value in rows]
        self.state.dice_plot = _dice_plot(thresholds, dices, self.session.threshold,
                                          self.state.calibrated_threshold)

    async def download(self, what: str):
        """The map, the engine's mask at the current threshold or the edited segmentation, as NIfTI."""
        try:
            _, content = self.session.export(what)  # the page names the file itself
        except AnomalyDetectionError as exc:
            with self.state:
                self.state.error = str(exc)
            return None
        return self.server.protocol.addAttachment(content)

    # ------------------------------------------------------------------------------------ UI

    def _button(self, text: str, click, test_id: str, **kwargs) -> None:
        v3.VBtn(text, click=click, raw_attrs=[f'data-testid="{test_id}"'], size="small", classes="ma-1", **kwargs)

    def _upload_button(self, text: str, handler, test_id: str) -> None:
        state = TypedState(self.state, LoadVolumeItemsState, namespace=test_id.replace("-", "_"))
        with html.Div(classes="d-flex align-center ma-1", raw_attrs=[f'data-testid="{test_id}"']):
            button = LoadVolumeButton(name=text, load_directory=False, icon="mdi-file-upload", typed_state=state)
            html.Span(text, classes="text-caption")
        button.on_load_volume.connect(handler)

    def _build_ui(self):
        with VAppLayout(self.server, full_height=True) as layout:
            with html.Div(classes="d-flex", style="height: 100vh;"):
                with html.Div(style="flex: 0 0 380px; overflow-y: auto;", classes="pa-2"):
                    self._controls()
                with html.Div(classes="d-flex flex-column", style="flex: 1 1 auto; min-width: 0;"):
                    with html.Div(v_if=("teaching",), classes="d-flex flex-wrap pa-1",
                                  raw_attrs=['data-testid="teaching-legend"']):
                        with html.Div(v_for="panel in teaching_panels", key="panel.name", classes="text-caption pa-1",
                                      style="width: 33%;"):
                            html.B("{{ panel.name }}: ")
                            html.Span("{{ panel.text }}")
                    with html.Div(classes="d-flex", style="flex: 1 1 auto; min-height: 0;"):
                        self.layouts.initialize_layout_grid(layout)
        return layout

    def _controls(self) -> None:
        html.H3("Anomaly detection")
        with html.Div(classes="d-flex flex-wrap"):
            self._button("Load sample", self.load_sample, "load-sample", disabled=("busy",))
            self._upload_button("Upload scan", self.on_upload, "upload-scan")
        html.Div("Scan: {{ scan_name || 'none' }}", classes="text-body-2", raw_attrs=['data-testid="scan-name"'])
        v3.VSelect(label="Model", v_model=("model",), items=("models",), density="compact", hide_details=True,
                   classes="mt-2", raw_attrs=['data-testid="model"'])
        v3.VSelect(label="Score", v_model=("score",), items=("scores",), density="compact", hide_details=True,
                   classes="mt-2", raw_attrs=['data-testid="score"'])
        v3.VSelect(label="Device", v_model=("device",), items=("devices",), density="compact", hide_details=True,
                   classes="mt-2", raw_attrs=['data-testid="device"'])
        with html.Div(classes="d-flex flex-wrap mt-2"):
            self._button("Detect anomalies", self.detect, "detect", color="primary", disabled=("busy || !scan_name",))
            self._button("Teaching mode", (self.detect, "[true]"), "teach", disabled=("busy || !scan_name",))
            self._button("Cancel", self.cancel, "cancel", color="warning", disabled=("!busy",))
        v3.VProgressLinear(model_value=("progress",), v_show=("busy",), height=8, classes="mt-1",
                           raw_attrs=['data-testid="progress"'])
        html.Div("{{ progress_message }}", v_show=("busy",), classes="text-caption")
        v3.VAlert(text=("error",), v_show=("error",), type="error", density="compact", classes="mt-2",
                  raw_attrs=['data-testid="error"'])
        with html.Div(v_for="w in warnings", key="w"):
            v3.VAlert(text=("w",), type="warning", density="compact", classes="mt-2",
                      raw_attrs=['data-testid="warning"'])
        v3.VAlert(text=("info",), v_show=("info",), type="info", density="compact", classes="mt-2",
                  raw_attrs=['data-testid="info"'])
        with html.Div(v_show=("has_result",)):
            html.Div("{{ sample_answer }}", classes="text-body-2 mt-2", raw_attrs=['data-testid="sample-answer"'])
            html.Div("Detection: {{ detect_seconds }} s; server memory {{ memory_mb }} MB", classes="text-caption")
            v3.VSlider(label="Map opacity", v_model=("opacity",), min=0, max=1, step=0.05, hide_details=True,
                       classes="mt-2", raw_attrs=['data-testid="opacity"'])
            v3.VSelect(label="Colour map", v_model=("colour",), items=("Object.entries(colours).map(([t, v]) => "
                                                                      "({title: t, value: v}))",),
                       density="compact", hide_details=True, classes="mt-2", raw_attrs=['data-testid="colour"'])
            v3.VRangeSlider(label="Window", v_model=("map_window",), min=("map_window_min",), max=("map_window_max",),
                            step=0,
                            hide_details=True, classes="mt-2", raw_attrs=['data-testid="window"'])
            v3.VSlider(label="Threshold", v_model=("threshold",), min=("threshold_min",), max=("threshold_max",),
                       step=0, hide_details=True, classes="mt-2",  # 0: no rounding of the calibrated value
                       raw_attrs=['data-testid="threshold"'])
            with html.Div(classes="text-caption"):
                html.Span("threshold {{ threshold.toPrecision(4) }} (calibrated "
                          "{{ calibrated_threshold.toPrecision(4) }}); anomaly segment: ")
                html.Span("{{ segment_voxels }}", raw_attrs=['data-testid="segment-voxels"'])
                html.Span(" voxels")
            self._button("Calibrated threshold", self.reset_threshold, "reset-threshold")
            html.H4("Segment Editor", classes="mt-2")
            with v3.VBtnToggle(v_model=("effect",), mandatory=True, density="compact"):
                for name in EFFECTS:
                    v3.VBtn(name, value=name, size="small", raw_attrs=[f'data-testid="effect-{name.lower()}"'])
            v3.VSlider(label="Brush (mm)", v_model=("brush_mm",), min=1, max=40, step=1, hide_details=True,
                       v_show=("effect == 'Paint' || effect == 'Erase'",), raw_attrs=['data-testid="brush"'])
            self._button("Apply threshold", self.apply_threshold_effect, "apply-threshold",
                         v_show=("effect == 'Threshold'",))
            with html.Div(v_show=("effect == 'Islands'",)):
                self._button("Keep largest island", self.keep_largest_island, "keep-largest")
                self._button("Remove small islands", self.remove_small_islands, "remove-small")
            with html.Div(classes="d-flex"):
                self._button("Undo", self.undo, "undo", disabled=("!can_undo",))
                self._button("Redo", self.redo, "redo", disabled=("!can_redo",))
            html.H4("Evaluate", classes="mt-2")
            self._upload_button("Upload reference segmentation", self.on_truth_upload, "upload-truth")
            self._button("Evaluate", self.evaluate, "evaluate", disabled=("!has_truth",))
            with html.Table(v_show=("metrics.length",), classes="text-body-2", raw_attrs=['data-testid="metrics"']):
                with html.Tr(v_for="row in metrics", key="row.metric"):
                    html.Td("{{ row.metric }}")
                    html.Td("{{ row.value }}", raw_attrs=[":data-metric='row.metric'"])
            html.Img(src=("dice_plot",), v_show=("dice_plot",), style="width: 100%;",
                     raw_attrs=['data-testid="dice-plot"'])
            html.H4("Download", classes="mt-2")
            with html.Div(classes="d-flex flex-wrap"):
                for what, suffix in EXPORT_SUFFIXES.items():
                    trigger = self.server.trigger_name(self.download)
                    v3.VBtn(what, size="small", classes="ma-1", raw_attrs=[f'data-testid="download-{what}"'],
                            click=f"utils.download(scan_name + '_{suffix}', "
                                  f"trigger('{trigger}', ['{what}']), 'application/gzip')")
            self._button("Back to the four views", self.show_views, "show-views", v_show=("teaching",))


def _content(file: Dict[str, Any]) -> bytes:
    """The bytes of a file the page sent (trame sends one blob, or a list of chunks)."""
    content = file.get("content", b"")
    if isinstance(content, (list, tuple)):
        return b"".join(bytes(c) for c in content)
    return bytes(content)


def _dice_plot(thresholds, dices, threshold: float, calibrated: float) -> str:
    """The Dice-vs-threshold curve as a PNG data URL (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 2.6), dpi=100)
    axes.plot(thresholds, dices, color="#e64d1a", linewidth=2)
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label="current")
    axes.axvline(calibrated, color="grey", linestyle=":", linewidth=1, label="calibrated")
    axes.set_xlabel("threshold")
    axes.set_ylabel("Dice")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
