"""3D Slicer module: unsupervised anomaly detection in a volume (VAE, beta-VAE, entropy-constrained AE).

Module (description), parameter node, Widget (Qt), Logic (console and batch API) and Test (in Slicer).
The work is done by two packages beside this file: ``AnomalyDetectionLib`` (the engine: torch, MONAI,
SimpleITK; no Slicer) and ``AnomalyDetectionMRML`` (volume nodes in, map/segmentation/table nodes out;
no Qt). PyTorch and MONAI, which Slicer does not ship, are installed on first use after the user
agrees, so this file imports at module level only the engine's torch-free front door
(``AnomalyDetectionLib.catalog``, ``.errors``, ``.dependencies``): Slicer must start, and show this
module with its models and scores, without PyTorch.
"""

import hashlib
import importlib.util
import inspect
import logging
import math
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, SlicerParameterNamePropertyName, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from AnomalyDetectionLib.catalog import (
    ARCHITECTURES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    DEVICES,
    MODEL_SUFFIX,
    SAMPLE_NAME,
    SCORE_HELP,
    SCORES,
    SMOOTHING,
    bundled_model_paths,
    default_score,
    read_card_file,
    resolve_model_path,
    sample_paths,
    scores_for_card,
)
from AnomalyDetectionLib.dependencies import read_requirements, unmet_requirements
from AnomalyDetectionLib.errors import AnomalyDetectionError, Cancelled

MODULE_DIR = Path(__file__).resolve().parent
ICONS_DIR = MODULE_DIR / "Resources" / "Icons"
SAMPLE_SCAN, SAMPLE_TRUTH = sample_paths()
SAMPLE_CATEGORY = "Anomaly detection"
#: Python packages the engine needs that Slicer does not ship, with minimum versions (first-use install).
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"

#: Packages that live beside this file and must be re-imported when the module is reloaded.
ENGINE_PACKAGES = ("AnomalyDetectionLib", "AnomalyDetectionMRML")
LOAD_MODEL_ITEM = "__load_model_file__"
USER_MODELS_SETTING = "AnomalyDetection/UserModels"

MODEL_DEFAULT_SMOOTHING = "model default"
SMOOTHING_CHOICES = [MODEL_DEFAULT_SMOOTHING, *SMOOTHING]

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class RequirementsError(RuntimeError):
    """The Python packages the engine needs are missing or too old and were not (or could not be) installed."""


#
# Module
#


class AnomalyDetection(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Anomaly Detection"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["AnomalyDetection contributors"]
        self.parent.helpText = _helpText()
        self.parent.acknowledgementText = _acknowledgementText()
        # SampleData is a module like this one: it can only be used once every module is loaded.
        slicer.app.connect("startupCompleted()", registerSampleData)


def _helpText() -> str:
    """Help panel text: what the module does, then each score in two lines."""
    scores = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in SCORE_HELP.items())
    return (
        "Finds what is <i>not normal</i> in a volume. A model trained on normal scans only (a variational "
        "auto-encoder, a beta-VAE, or an entropy-constrained auto-encoder) turns the input into a voxel-wise "
        "<b>anomaly map</b> and an <b>anomaly segmentation</b> (the map above a threshold calibrated on normal "
        "scans). The bundled brain models take any T1-weighted brain MRI, with or without skull, in any "
        "orientation: it is registered to the MNI152 template and the map comes back on the input's grid.<br>"
        "Move the <b>threshold</b> slider to grow or shrink the segmentation, refine it in the Segment Editor, "
        "compare it with your own segmentation (<b>Evaluate</b>: Dice, AUROC, AUPRC), or <b>train</b> a model on "
        "your own normal scans. The first use installs PyTorch and MONAI (after asking).<br>"
        f"Scores:<ul>{scores}</ul>"
        "From the Python console: <code>slicer.util.getModuleLogic('AnomalyDetection').process(volumeNode)</code>."
    )


def _acknowledgementText() -> str:
    return (
        "Methods from: D. Zimmerer, F. Isensee, J. Petersen, S. Kohl, K. Maier-Hein, <i>Unsupervised Anomaly "
        "Localization using Variational Auto-Encoders</i>, MICCAI 2019 (arXiv:1907.02796); "
        "X. Zhou et al., <i>A Study of Unsupervised Anomaly Detection in Medical Images with Variational "
        "Auto-Encoders</i> (beta-VAE, energy-based projection, ensembles), 2020 (arXiv:2005.10686); "
        "Y. Cai et al., <i>Rethinking Autoencoders for Medical Anomaly Detection from a Theoretical "
        "Perspective</i> (a small latent entropy), MICCAI 2024 (arXiv:2403.09303). "
        "Networks from MONAI, built on PyTorch; image handling with SimpleITK. "
        "MNI ICBM152 2009a template: McConnell Brain Imaging Centre (shipped in nilearn)."
    )


#
# Sample data
#


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def registerSampleData() -> None:
    """Add the shipped scan (and its ground-truth segmentation) to the Sample Data module.

    The files are local, so their ``file://`` URLs are 'downloaded' (copied) into Slicer's cache; the
    checksums make a regenerated sample replace an old cached copy. A missing SampleData module
    (e.g. a stripped-down custom application) only means no Sample Data entry.
    """
    try:
        import SampleData
    except ImportError:
        logging.info("AnomalyDetection: no SampleData module; the sample scan is not registered")
        return
    if not (SAMPLE_SCAN.is_file() and SAMPLE_TRUTH.is_file()):
        logging.warning(f"AnomalyDetection: sample scan missing: {SAMPLE_SCAN}")
        return
    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer >= 5.12
        logic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title=SAMPLE_CATEGORY)
    files = (SAMPLE_SCAN, SAMPLE_TRUTH)
    # The truth is a plain labelmap; Slicer's segmentation reader imports it as a segmentation.
    # Slicer 5.8 renamed the keyword loadFileType to loadFileTypes; 5.4 and 5.6 reject the new name
    # (TypeError), 5.8+ still accept the old one but document it as deprecated: pass the one this Slicer has.
    fileTypes = ["VolumeFile", "SegmentationFile"]
    parameters = inspect.signature(logic.registerCustomSampleDataSource).parameters
    fileTypesKeyword = "loadFileTypes" if "loadFileTypes" in parameters else "loadFileType"
    logic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(ICONS_DIR / f"{SAMPLE_NAME}.png"),
        uris=[path.as_uri() for path in files],
        fileNames=[path.name for path in files],
        nodeNames=[SAMPLE_NAME, f"{SAMPLE_NAME}_truth"],
        checksums=[f"SHA256:{_sha256(path)}" for path in files],
        **{fileTypesKeyword: fileTypes},
    )


#
# Parameter node
#


@parameterNodeWrapper
class AnomalyDetectionParameterNode:
    """Everything the user chose, saved with the scene.

    inputVolume - the scan to examine.
    model - a bundled model's name or a model file's path.
    score - the anomaly score ("" = the model's default score).
    device, batchSize - where and how many slices at a time the network runs.
    smoothing - post-processing filter of the map (MODEL_DEFAULT_SMOOTHING keeps the calibrated one).
    projectionSteps, projectionAlpha, projectionLambda - energy-based projection parameters.
    threshold - the current threshold of the anomaly segmentation.
    anomalyMap, anomalySegmentation, anomalyForeground - outputs of the last detection (None: created by the
        next one); the foreground labelmap is the region scored, which Evaluate and the threshold use.
    referenceSegmentation, referenceSegmentID - the reference for Evaluate.
    extraScores - also output every other score's map and the model's reconstruction (teaching).
    trainArch, trainEpochs, trainTemplate - training choices.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL
    score: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    batchSize: Annotated[int, WithinRange(1, 1024)] = DEFAULT_BATCH_SIZE
    smoothing: Annotated[str, Choice(SMOOTHING_CHOICES)] = MODEL_DEFAULT_SMOOTHING
    projectionSteps: Annotated[int, WithinRange(1, 500)] = 20
    projectionAlpha: Annotated[float, WithinRange(0.0, 100.0)] = 1.0
    projectionLambda: Annotated[float, WithinRange(0.0, 100.0)] = 0.1
    threshold: float = 0.0
    anomalyMap: vtkMRMLScalarVolumeNode
    anomalySegmentation: vtkMRMLSegmentationNode
    anomalyForeground: vtkMRMLLabelMapVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentID: str = ""
    extraScores: bool = False
    trainArch: Annotated[str, Choice(list(ARCHITECTURES))] = "vae"
    trainEpochs: Annotated[int, WithinRange(1, 1000)] = 20
    trainTemplate: bool = True


#
# Widget
#


class AnomalyDetectionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, Detect anomalies, threshold, Segment Editor, Evaluate, Train."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[AnomalyDetectionLogic] = None
        self._parameterNode: Optional[AnomalyDetectionParameterNode] = None
        self._parameterNodeGuiTag = None
        self._outputs = None  # AnomalyDetectionMRML.DetectionOutputs of the last detection
        self._tableNode = None
        self._plotChartNode = None
        self._cancelRequested = False
        self._busy = False
        self._updatingGui = False
        self._shownModelScore = None  # (model, score) the model and score combo boxes show
        self._shownMap = None  # the map node the threshold slider's range was set for

    # ----------------------------------------------------------------------------- setup

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AnomalyDetection.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AnomalyDetectionLogic()

        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.ui.referenceSegmentSelector.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.scoreComboBox.connect("currentIndexChanged(int)", self.onScoreChanged)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.detectButton.connect("clicked(bool)", self.onDetect)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.resetThresholdButton.connect("clicked(bool)", self.onResetThreshold)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineInSegmentEditor)
        self.ui.referenceSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onReferenceChanged)
        self.ui.referenceSegmentSelector.connect("currentSegmentChanged(QString)", self.onReferenceChanged)
        self.ui.evaluateButton.connect("clicked(bool)", self.onEvaluate)
        self.ui.trainingFolderPathLineEdit.connect("currentPathChanged(QString)", self.updateButtonStates)
        self.ui.trainingOutputPathLineEdit.connect("currentPathChanged(QString)", self.updateButtonStates)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def onReload(self) -> None:
        """Reload the engine packages too: otherwise Reload would keep running their old code."""
        for name in list(sys.modules):
            if any(name == package or name.startswith(package + ".") for package in ENGINE_PACKAGES):
                del sys.modules[name]
        super().onReload()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._outputs = self._tableNode = self._plotChartNode = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode: Optional[AnomalyDetectionParameterNode]) -> None:
        """Connect the GUI to ``parameterNode``; widgets without a SlicerParameterName are synced by hand."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
        self._parameterNode = parameterNode
        self._shownModelScore = self._shownMap = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._connectGui(self._parameterNode)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
            self.fillModelComboBox()
            self.updateGuiFromParameterNode()

    def _connectGui(self, parameterNode: AnomalyDetectionParameterNode) -> int:
        """``parameterNode.connectGui(self.ui)``, returning the tag that ``disconnectGui`` needs in every Slicer.

        Before Slicer 5.10 ``connectGui`` dropped the tag of the ``connectParametersToGui`` call it makes
        (returned None; fixed by Slicer commit b5a65a49a0), so ``disconnectGui`` did nothing and each
        enter() or scene close stacked one more set of widget connections. ``connectParametersToGui``,
        given the same widgets (those with a SlicerParameterName), returns the tag in 5.4 too.
        """
        widgets = {}
        for widget in vars(self.ui).values():
            name = widget.property(SlicerParameterNamePropertyName)
            if name:
                widgets[name] = widget
        return parameterNode.connectParametersToGui(widgets)

    # ------------------------------------------------------------------- GUI <-> parameters

    def updateGuiFromParameterNode(self, caller=None, event=None) -> None:
        """Sync the hand-managed widgets (model, score, threshold, reference) and the buttons."""
        if self._parameterNode is None or self._updatingGui:
            return
        self._updatingGui = True
        try:
            modelScore = (self._parameterNode.model, self._parameterNode.score)
            if modelScore != self._shownModelScore:  # not on every threshold-slider step
                self._selectModelItem(self._parameterNode.model)
                self._shownModelScore = modelScore
            if self._parameterNode.anomalyMap is not self._shownMap:  # e.g. a scene loaded with results
                self._showMapState(self._parameterNode.anomalyMap)
            self._syncReferenceSelector()
        finally:
            self._updatingGui = False
        self.updateButtonStates()

    def updateButtonStates(self, *unused) -> None:
        """Enable what can be done now; explain in tooltips what is missing."""
        p = self._parameterNode
        idle = not self._busy
        hasInput = bool(p and p.inputVolume)
        self.ui.detectButton.enabled = idle and hasInput
        self.ui.detectButton.toolTip = ("Score the input volume with the chosen model and score." if hasInput
                                        else "Select an input volume first.")
        hasResult = bool(p and p.anomalyMap and p.anomalySegmentation)
        self.ui.thresholdSlider.enabled = idle and hasResult
        self.ui.resetThresholdButton.enabled = idle and hasResult and self._calibratedThreshold() is not None
        self.ui.refineButton.enabled = idle and hasResult
        hasReference = bool(self.ui.referenceSegmentSelector.currentNode()
                            and self.ui.referenceSegmentSelector.currentSegmentID())
        self.ui.evaluateButton.enabled = idle and bool(p and p.anomalyMap) and hasReference
        paths = (self.ui.trainingFolderPathLineEdit.currentPath, self.ui.trainingOutputPathLineEdit.currentPath)
        self.ui.trainButton.enabled = idle and all(paths)
        for widget in (self.ui.inputsCollapsibleButton, self.ui.loadSampleButton, self.ui.trainCollapsibleButton):
            widget.enabled = idle

    def _syncReferenceSelector(self) -> None:
        p = self._parameterNode
        selector = self.ui.referenceSegmentSelector
        if selector.currentNode() != p.referenceSegmentation:
            selector.setCurrentNode(p.referenceSegmentation)
        if p.referenceSegmentID and selector.currentSegmentID() != p.referenceSegmentID:
            selector.setCurrentSegmentID(p.referenceSegmentID)

    def onReferenceChanged(self, *unused) -> None:
        if self._parameterNode is None or self._updatingGui:
            return
        self._parameterNode.referenceSegmentation = self.ui.referenceSegmentSelector.currentNode()
        self._parameterNode.referenceSegmentID = self.ui.referenceSegmentSelector.currentSegmentID() or ""
        self.updateButtonStates()

    def _showMapState(self, mapNode) -> None:
        """Threshold slider range and report summary of ``mapNode`` (from the attributes detection left on it)."""
        self._shownMap = mapNode
        if mapNode is None or mapNode.GetImageData() is None:
            self.ui.reportLabel.text = ""
            return
        report = self.logic.detectionReport(mapNode)
        if report is None:  # not a map of this module: nothing to threshold or summarise
            self.ui.reportLabel.text = ""
            return
        self._setThresholdRange(mapNode, self._parameterNode.threshold)
        self.ui.reportLabel.text = _reportSummary(report) if "threshold" in report else ""

    # ------------------------------------------------------------------------- models

    def fillModelComboBox(self) -> None:
        """Bundled models, then models trained or loaded earlier, then 'Load model file...'."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for path in bundled_model_paths():
            card = self.logic.modelCard(str(path)) or {}
            name = path.stem
            combo.addItem(f"{name} ({card.get('arch', '?')}, bundled)", name)
            combo.setItemData(combo.count - 1, card.get("description", ""), qt.Qt.ToolTipRole)
        for path in self.logic.userModelPaths():
            combo.addItem(f"{path.name} ({path.parent})", str(path))
            combo.setItemData(combo.count - 1, str(path), qt.Qt.ToolTipRole)
        combo.addItem("Load model file...", LOAD_MODEL_ITEM)
        combo.blockSignals(wasBlocked)

    def _selectModelItem(self, model: str) -> None:
        """Show ``model`` in the model combo (adding it if it is a file not listed yet) and refill the scores."""
        combo = self.ui.modelComboBox
        index = combo.findData(model)
        if index < 0 and model and Path(model).is_file():
            self.logic.rememberUserModel(Path(model))
            self.fillModelComboBox()
            index = combo.findData(model)
        if index < 0:
            index = max(combo.findData(DEFAULT_MODEL), 0)
        if combo.currentIndex != index:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)
        self._fillScoreComboBox(combo.itemData(index))

    def onModelActivated(self, index: int) -> None:
        """The user picked a model (or 'Load model file...')."""
        data = self.ui.modelComboBox.itemData(index)
        if data == LOAD_MODEL_ITEM:
            path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Load an anomaly detection model",
                                                  "", "Model files (*.pt)")
            if not path:
                self._reselectModelAndScore()  # back to the model that was selected
                return
            data = path
        self._parameterNode.score = ""  # the new model's default score
        self._parameterNode.model = str(data)
        self._reselectModelAndScore()  # picking the same model again changes no parameter

    def _reselectModelAndScore(self) -> None:
        """Show the parameter node's model and score although neither changed.

        A re-picked model, a cancelled 'Load model file...' or a retrain into the selected model's
        file cause no Modified event, yet the model combo box may show another item.
        """
        self._shownModelScore = None
        self.updateGuiFromParameterNode()

    def _fillScoreComboBox(self, model: Optional[str]) -> None:
        """Offer the scores of ``model``, selecting the parameter node's score or the model's default."""
        combo = self.ui.scoreComboBox
        card = self.logic.modelCard(model) if model and model != LOAD_MODEL_ITEM else None
        scores = scores_for_card(card) if card else list(SCORES)
        default = default_score(card) if card else SCORES[0]
        wanted = self._parameterNode.score if self._parameterNode.score in scores else default
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for score in scores:
            combo.addItem(f"{score} (default)" if score == default else score, score)
            combo.setItemData(combo.count - 1, SCORE_HELP.get(score, ""), qt.Qt.ToolTipRole)
        combo.currentIndex = max(combo.findData(wanted), 0)
        combo.blockSignals(wasBlocked)
        description = (card or {}).get("description", "")
        self.ui.modelDescriptionLabel.text = description if len(description) < 400 else description[:397] + "..."
        self.ui.modelDescriptionLabel.toolTip = description

    def onScoreChanged(self, index: int) -> None:
        if self._parameterNode is None or self._updatingGui or index < 0:
            return
        self._parameterNode.score = self.ui.scoreComboBox.itemData(index) or ""

    # ---------------------------------------------------------------- progress and errors

    def _progress(self, fraction: float, message: str) -> None:
        """Engine progress callback: move the bar and keep the GUI (and Cancel) responsive."""
        self.ui.progressBar.value = int(round(100 * min(max(fraction, 0.0), 1.0)))
        if message:
            self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def _cancel(self) -> bool:
        """Engine cancel check: True once Cancel was clicked."""
        slicer.app.processEvents()
        return self._cancelRequested

    def onCancel(self) -> None:
        self._cancelRequested = True
        self.ui.cancelButton.enabled = False
        self.ui.statusLabel.text = "Cancelling..."

    @contextmanager
    def _running(self, what: str) -> Iterator[None]:
        """Show the progress bar and Cancel while ``what`` runs; report its failure in one dialog.

        Cancellation is not an error (the engine raises ``Cancelled`` and adds no node); input and
        model problems are ``AnomalyDetectionError`` with a one-line message for the user; anything
        else is a bug, shown with its traceback.
        """
        self._busy, self._cancelRequested = True, False
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(True)
        self.ui.cancelButton.setVisible(True)
        self.ui.cancelButton.enabled = True
        self.ui.statusLabel.text = f"{what}..."
        self.updateButtonStates()
        slicer.app.processEvents()
        try:
            yield
        except Exception as exc:
            if isinstance(exc, Cancelled):
                self.ui.statusLabel.text = f"{what}: cancelled."
            elif isinstance(exc, (AnomalyDetectionError, RequirementsError, ValueError)):
                self.ui.statusLabel.text = f"{what} failed: {exc}"
                slicer.util.errorDisplay(f"{what} failed:\n\n{exc}")
            else:
                logging.error(traceback.format_exc())
                self.ui.statusLabel.text = f"{what} failed: {exc}"
                slicer.util.errorDisplay(f"{what} failed:\n\n{exc}", detailedText=traceback.format_exc())
        finally:
            self._busy = False
            self.ui.progressBar.setVisible(False)
            self.ui.cancelButton.setVisible(False)
            self.updateButtonStates()

    # ------------------------------------------------------------------------ actions

    def onLoadSample(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the sample scan.", waitCursor=True):
            scan, reference = self.logic.loadSample()
            self._parameterNode.inputVolume = scan
            self._parameterNode.referenceSegmentation = reference
            self._parameterNode.referenceSegmentID = reference.GetSegmentation().GetNthSegmentID(0)
            slicer.util.setSliceViewerLayers(background=scan, fit=True)
            self.ui.statusLabel.text = ("Sample loaded: a T1 head scan with a tumour-like lesion (its ground truth "
                                        "is the reference segmentation). Click 'Detect anomalies'.")

    def onDetect(self) -> None:
        p = self._parameterNode
        with self._running("Anomaly detection"):
            previous = self.logic.outputsFor(p.anomalyMap, p.anomalySegmentation, p.anomalyForeground, self._outputs)
            outputs = self.logic.process(
                p.inputVolume, model=p.model, score=p.score or None, threshold="auto", device=p.device,
                batchSize=p.batchSize, scoreParams=self._scoreParams(), postprocessing=self._postprocessing(),
                extraScores=self.logic.scoresForModel(p.model) if p.extraScores else (),
                withReconstruction=p.extraScores,
                progress=self._progress, cancel=self._cancel, outputs=previous,
            )
            self._showOutputs(outputs)

    def _scoreParams(self) -> Optional[Dict[str, Any]]:
        p = self._parameterNode
        score = p.score or default_score(self.logic.modelCard(p.model) or {"arch": "ae"})
        if score != "energy_projection":
            return None
        return {"steps": int(p.projectionSteps), "alpha": float(p.projectionAlpha), "lam": float(p.projectionLambda)}

    def _postprocessing(self) -> Optional[Dict[str, Any]]:
        smoothing = self._parameterNode.smoothing
        return None if smoothing == MODEL_DEFAULT_SMOOTHING else {"smoothing": smoothing}

    def _showOutputs(self, outputs) -> None:
        """Put the outputs into the parameter node (saved with the scene), set the threshold slider's range,
        and summarise the report (its warnings, e.g. a failed registration, first)."""
        self._outputs = outputs  # only to reuse the side-by-side score nodes on the next run
        p = self._parameterNode
        p.threshold = float(outputs.report["threshold"])
        p.anomalyMap = outputs.map_node
        p.anomalySegmentation = outputs.segmentation_node
        p.anomalyForeground = outputs.foreground_node
        self._showMapState(outputs.map_node)  # also when the map node was reused
        extra = len(outputs.score_nodes) + int(outputs.reconstruction_node is not None)
        warnings = outputs.report.get("warnings") or []
        self.ui.statusLabel.text = ((f"Done with {len(warnings)} warning(s), see below: " if warnings else "Done: ")
                                    + f"'{outputs.map_node.GetName()}' and '{outputs.segmentation_node.GetName()}'"
                                    + (f", plus {extra} more volumes" if extra else "") + ".")
        self.ui.resultsCollapsibleButton.collapsed = False
        self.updateButtonStates()

    def _setThresholdRange(self, mapNode, threshold: float) -> None:
        """Slider over the map's values inside its foreground, with steps and decimals fit for that range.

        (At any position the segment follows the engine's mask rule, so even the lowest one marks no
        voxel outside the foreground.)
        """
        low, high = self.logic.thresholdRange(mapNode)
        low, high = min(low, threshold), max(high, threshold)
        span = (high - low) or 1.0
        slider = self.ui.thresholdSlider
        wasBlocked = slider.blockSignals(True)
        slider.decimals = min(6, max(2, 3 - int(math.floor(math.log10(span)))))
        slider.setRange(low, high)
        slider.singleStep = span / 1000.0
        slider.value = threshold
        slider.blockSignals(wasBlocked)

    def _calibratedThreshold(self) -> Optional[float]:
        """The threshold the detection used (kept on the map node, so it survives saving the scene)."""
        mapNode = self._parameterNode.anomalyMap if self._parameterNode else None
        report = self.logic.detectionReport(mapNode) if mapNode is not None else None
        return float(report["threshold"]) if report else None

    def onThresholdChanged(self, value: float) -> None:
        """Live: re-threshold the map into the same segment (no detection is re-run)."""
        p = self._parameterNode
        if p is None or self._busy or not (p.anomalyMap and p.anomalySegmentation):
            return
        p.threshold = value
        self.logic.updateSegmentation(p.anomalyMap, value, p.anomalySegmentation)

    def onResetThreshold(self) -> None:
        threshold = self._calibratedThreshold()
        if threshold is not None:
            self.ui.thresholdSlider.value = threshold

    def onRefineInSegmentEditor(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor."):
            self.logic.openInSegmentEditor(p.anomalySegmentation, p.anomalyMap, self.ui.thresholdSlider.value)

    def onEvaluate(self) -> None:
        p = self._parameterNode
        with self._running("Evaluation"):
            segmentID = self.ui.referenceSegmentSelector.currentSegmentID()
            # The map node references the foreground its detection scored, also in a reloaded scene.
            brainOnly = self.logic.hasForeground(p.anomalyMap)
            self._tableNode, self._plotChartNode, metrics = self.logic.evaluate(
                p.anomalyMap, self.ui.referenceSegmentSelector.currentNode(), segmentID, self.ui.thresholdSlider.value,
                tableNode=self._tableNode, plotChartNode=self._plotChartNode)
            self.logic.showTableAndPlot(self._tableNode, self._plotChartNode)
            self.ui.evaluationLabel.text = _metricsSummary(metrics, brainOnly=brainOnly)
            self.ui.statusLabel.text = "Evaluation done: metrics table and Dice-vs-threshold plot shown."

    def onTrain(self) -> None:
        p = self._parameterNode
        folder = self.ui.trainingFolderPathLineEdit.currentPath
        output = self.ui.trainingOutputPathLineEdit.currentPath
        with self._running("Training"):
            model = self.logic.trainModel(folder, output, arch=p.trainArch, epochs=p.trainEpochs,
                                          useTemplate=p.trainTemplate, device=p.device, batchSize=p.batchSize,
                                          progress=self._progress, cancel=self._cancel)
            self.ui.trainingFolderPathLineEdit.addCurrentPathToHistory()
            self.ui.trainingOutputPathLineEdit.addCurrentPathToHistory()
            self.fillModelComboBox()
            p.score = ""
            p.model = str(model.path)
            self._reselectModelAndScore()  # the refilled combo box shows its first item
            self.ui.statusLabel.text = f"Trained and saved {model.path}; it is now the selected model."


def _reportSummary(report: Mapping[str, Any]) -> str:
    """A few lines from the engine's report: what was computed, at which threshold, and any warnings."""
    lines = [f"Model <b>{report.get('model', '?')}</b>, score <b>{report.get('score', '?')}</b>, "
             f"threshold {float(report['threshold']):.4g} ({report.get('threshold_source', '')})"]
    volume = report.get("anomalous_volume_ml")
    if isinstance(volume, (int, float)):
        lines.append(f"Anomalous volume: {volume:.1f} mL")
    percentile = report.get("sample_percentile")
    if isinstance(percentile, (int, float)):
        lines.append(f"Scan as a whole: sample score above {percentile:g} % of the {report.get('sample_normals')} "
                     "normal calibration scans")
    for warning in report.get("warnings", []) or []:
        lines.append(f"<span style='color:#b35900'>Warning: {warning}</span>")
    return "<br>".join(lines)


def _metricsSummary(metrics: Mapping[str, float], brainOnly: bool) -> str:
    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    where = "inside the brain mask" if brainOnly else "over the whole volume"
    return (f"Dice {fmt('dice')} at threshold {metrics.get('threshold', float('nan')):.4g}; best Dice "
            f"{fmt('best_dice')} at {fmt('best_threshold')}; voxel AUROC {fmt('voxel_auroc')}, AUPRC "
            f"{fmt('voxel_auprc')} ({where}).")


#
# Logic
#


class AnomalyDetectionLogic(ScriptedLoadableModuleLogic):
    """What the module does, callable without the GUI (Python console, ``Slicer --python-script``).

    ``process`` and ``processFolder`` delegate to ``AnomalyDetectionMRML``, which delegates the
    computation to the engine. The engine is imported inside the methods, after the Python
    requirements are checked (and installed, with the user's consent), so importing this module never
    needs torch.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._models: Dict[str, Any] = {}  # loaded models by file path and mtime: no reload per click
        self._cards: Dict[str, Dict[str, Any]] = {}  # model cards, same keys
        self._requirementsChecked = False

    def getParameterNode(self) -> AnomalyDetectionParameterNode:
        return AnomalyDetectionParameterNode(super().getParameterNode())

    # -------------------------------------------------------------------- requirements

    @staticmethod
    def unmetRequirements():
        """The requirements of :data:`REQUIREMENTS_FILE` that are missing or older than their minimum
        (``AnomalyDetectionLib.dependencies.Unmet``, torch first), read from package metadata without
        importing anything."""
        return unmet_requirements(read_requirements(REQUIREMENTS_FILE))

    def setupPythonRequirements(self, askConfirmation: bool = True) -> None:
        """Install or upgrade what the engine needs and Slicer lacks (PyTorch, MONAI, ...) on first use.

        Asks first (installation downloads about 1-3 GB). PyTorch comes from the PyTorch extension when
        it is installed, because it picks the CUDA build that matches the GPU driver; the rest through
        ``slicer.pydeps.pip_ensure`` where this Slicer has it (5.11+), else ``slicer.util.pip_install``.
        Upgrading a package that this Slicer session has already imported (e.g. an older torch another
        extension loaded) takes effect only after a restart, which is offered. Raises
        :class:`RequirementsError` if the user declines, an installation fails, or a restart is pending.
        """
        if self._requirementsChecked:
            return
        unmet = self.unmetRequirements()
        if unmet:
            listing = "\n".join(u.describe() for u in unmet)
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "Anomaly Detection needs Python packages that are missing or too old. Installing them downloads "
                "1-3 GB and may take several minutes. Install now?",
                "Install Python packages",
                detailedText=listing,
            ):
                raise RequirementsError("the required Python packages are not installed:\n" + listing)
            restart = [u for u in unmet if u.needs_restart]
            for requirement in unmet:
                self._install(requirement.requirement)
            importlib.invalidate_caches()
            if restart:
                self._offerRestart(restart)
            still = self.unmetRequirements()
            if still:
                raise RequirementsError("installation finished but these requirements are still not met:\n"
                                        + "\n".join(u.describe() for u in still) + "\nRestart Slicer and try again.")
        self._requirementsChecked = True

    @staticmethod
    def _offerRestart(upgraded) -> None:
        """Upgraded packages that were already imported only load after a restart: offer it, or refuse to go on."""
        names = ", ".join(u.name for u in upgraded)
        if slicer.util.confirmYesNoDisplay(
                f"{names} was upgraded, but this Slicer session had already loaded the old version. Slicer must "
                "restart to use the new one. Restart now?", "Restart Slicer"):
            slicer.util.restart()
        raise RequirementsError(f"{names} was upgraded; restart Slicer to use the new version")

    @staticmethod
    def _install(requirement: str) -> None:
        """Install one requirement, through the PyTorch extension for torch when it is available."""
        logging.info(f"AnomalyDetection: installing {requirement}")
        try:
            if requirement.startswith("torch") and AnomalyDetectionLogic._installTorchWithExtension(requirement):
                return
            pydeps = getattr(slicer, "pydeps", None)
            if pydeps is not None and hasattr(pydeps, "pip_ensure"):  # Slicer >= 5.11
                from packaging.requirements import Requirement

                pydeps.pip_ensure([Requirement(requirement)], requester="AnomalyDetection")
            else:
                slicer.util.pip_install(requirement)
        except Exception as exc:
            raise RequirementsError(
                f"could not install {requirement}: {exc}. Check the network connection, or install it from "
                f"Slicer's Python console: slicer.util.pip_install('{requirement}')"
            ) from exc

    @staticmethod
    def _installTorchWithExtension(requirement: str) -> bool:
        """Install torch through the PyTorch extension's logic; False if the extension is not installed."""
        try:
            import PyTorchUtils
        except ImportError:
            return False
        versionRange = requirement[len("torch"):]  # e.g. ">=2.0"
        logic = PyTorchUtils.PyTorchUtilsLogic()
        torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=versionRange)
        if torch is None:
            raise RequirementsError("the PyTorch extension did not install PyTorch")
        return True

    # -------------------------------------------------------------------------- models

    def userModelPaths(self) -> List[Path]:
        """Model files trained or loaded in earlier sessions that still exist."""
        value = qt.QSettings().value(USER_MODELS_SETTING) or []
        paths = [value] if isinstance(value, str) else list(value)
        return [Path(p) for p in dict.fromkeys(paths) if p and Path(p).is_file()]

    def rememberUserModel(self, path: Path) -> None:
        paths = [str(p) for p in self.userModelPaths()]
        if str(path) not in paths:
            qt.QSettings().setValue(USER_MODELS_SETTING, paths + [str(path)])

    @staticmethod
    def modelFilePath(model: Optional[str]) -> Optional[Path]:
        """The file of a bundled model's name or a path (the engine's one lookup rule); None if there is none."""
        try:
            return resolve_model_path(model or None)
        except AnomalyDetectionError:
            return None

    def modelCard(self, model: Optional[str]) -> Optional[Dict[str, Any]]:
        """A model's card: its .card.json if present (no torch needed), else from the loaded model file."""
        path = self.modelFilePath(model)
        if path is None:
            return None
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
        if key not in self._cards:
            try:
                card = read_card_file(path) or dict(self.loadModel(str(path)).card)
            except Exception as exc:  # reported where the model is used; the GUI then lists every score
                logging.warning(f"AnomalyDetection: cannot read the model card of {path}: {exc}")
                return None
            self._cards[key] = card
        return self._cards[key]

    def scoresForModel(self, model: Optional[str]) -> List[str]:
        card = self.modelCard(model)
        return scores_for_card(card) if card else list(SCORES)

    def loadModel(self, model: Union[None, str, Path, Any] = None):
        """The engine's ``Model`` for a name, a path or a Model, cached by file and modification time."""
        self.setupPythonRequirements()
        from AnomalyDetectionLib import Model, load_model

        if isinstance(model, Model):
            return model
        path = resolve_model_path(str(model) if model is not None else None)  # ModelError names the bundled ones
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
        if key not in self._models:
            self._models[key] = load_model(path)
        return self._models[key]

    def detector(
        self,
        model: Union[None, str, Path, Any] = None,
        score: Optional[str] = None,
        threshold: Union[str, float] = "auto",
        device: str = "auto",
        batchSize: int = DEFAULT_BATCH_SIZE,
        scoreParams: Optional[Mapping[str, Any]] = None,
        postprocessing: Optional[Mapping[str, Any]] = None,
    ):
        """The engine's ``Detector`` (model + validated settings) for the console API's arguments.

        The one place where the module's keyword arguments become engine settings; everything below
        (``AnomalyDetectionMRML``, the engine) receives the detector.
        """
        self.setupPythonRequirements()
        from AnomalyDetectionLib import Detector

        return Detector(self.loadModel(model), score=score, threshold=threshold, device=device, batch_size=batchSize,
                        score_params=dict(scoreParams) if scoreParams else None,
                        postprocessing=dict(postprocessing) if postprocessing else None)

    # ------------------------------------------------------------------------ detection

    def process(
        self,
        volumeNode,
        model: Union[None, str, Path, Any] = None,
        score: Optional[str] = None,
        threshold: Union[str, float] = "auto",
        device: str = "auto",
        batchSize: int = DEFAULT_BATCH_SIZE,
        scoreParams: Optional[Mapping[str, Any]] = None,
        postprocessing: Optional[Mapping[str, Any]] = None,
        extraScores: Sequence[str] = (),
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        outputs=None,
        showResult: bool = True,
        withReconstruction: bool = False,
    ):
        """Detect anomalies in ``volumeNode``; returns ``AnomalyDetectionMRML.DetectionOutputs``.

        ``model``: a bundled model's name (default ``brain_t1_ae``), a ``.pt`` path or a loaded model;
        ``score``: None for the model's default; ``threshold``: "auto" (calibrated) or a number;
        ``extraScores``: other scores whose maps are added side by side; ``withReconstruction``: also
        the model's reconstruction of the scan as a volume (teaching); ``outputs``: an earlier
        result whose nodes are reused. Creates a float32 anomaly map on the input's exact grid (shown
        as a heat map over the input when ``showResult``), a segmentation with segment "Anomaly" (the
        engine's mask, as ``anomaly-detection detect`` writes it) and the scored region as a labelmap.
        Raises ``AnomalyDetectionLib.Cancelled`` when ``cancel()`` returns True and
        ``AnomalyDetectionLib.AnomalyDetectionError`` for unusable inputs; on error no node is added.
        """
        detector = self.detector(model, score, threshold, device, batchSize, scoreParams, postprocessing)
        from AnomalyDetectionMRML import process as processNode

        result = processNode(volumeNode, detector, outputs=outputs, extra_scores=tuple(extraScores),
                             with_reconstruction=withReconstruction, progress=progress, cancel=cancel)
        if showResult and slicer.app.layoutManager() is not None:
            slicer.util.setSliceViewerLayers(background=volumeNode, foreground=result.map_node, foregroundOpacity=0.5)
        return result

    def processFolder(
        self,
        inputDir: Union[str, Path],
        outputDir: Union[str, Path],
        model: Union[None, str, Path, Any] = None,
        score: Optional[str] = None,
        threshold: Union[str, float] = "auto",
        device: str = "auto",
        truthDir: Union[None, str, Path] = None,
        batchSize: int = DEFAULT_BATCH_SIZE,
        scoreParams: Optional[Mapping[str, Any]] = None,
        postprocessing: Optional[Mapping[str, Any]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        overwrite: bool = False,
    ) -> Path:
        """Detect anomalies in every volume of ``inputDir`` (files only, no scene); returns the metrics CSV.

        Writes ``<stem>_anomaly.nii.gz``, ``<stem>_mask.nii.gz``, ``<stem>_foreground.nii.gz`` (the
        region scored) and ``<stem>_report.json`` per input into ``outputDir``, and one CSV row per
        input (with Dice, AUROC, AUPRC when ``truthDir`` holds ``<stem>`` or ``<stem>_*``), plus the
        run summary ``anomaly_detection_run.json``/``.csv``. Inputs of the same file name get distinct
        stems; outputs already there are kept (same settings: skipped, so a rerun resumes; another
        run's: an error row) unless ``overwrite``. A bad input is an ``error`` row; the run goes on.
        """
        detector = self.detector(model, score, threshold, device, batchSize, scoreParams, postprocessing)
        from AnomalyDetectionMRML import process_folder

        return process_folder(inputDir, outputDir, detector, truth_dir=truthDir, progress=progress, cancel=cancel,
                              overwrite=overwrite)

    def outputsFor(self, mapNode, segmentationNode, foregroundNode=None, previous=None):
        """``DetectionOutputs`` naming the nodes to overwrite (None: let ``process`` create them)."""
        if mapNode is None and segmentationNode is None:
            return None
        from AnomalyDetectionMRML import DetectionOutputs

        same = previous is not None and previous.map_node is mapNode
        return DetectionOutputs(mapNode, segmentationNode, foregroundNode,
                                score_nodes=dict(previous.score_nodes) if same else {},
                                reconstruction_node=previous.reconstruction_node if same else None)

    @staticmethod
    def updateSegmentation(mapNode, threshold: float, segmentationNode=None):
        """Re-threshold ``mapNode`` into the "Anomaly" segment by the engine's mask rule (the slider's call)."""
        from AnomalyDetectionMRML import update_segmentation

        return update_segmentation(mapNode, float(threshold), segmentationNode)

    @staticmethod
    def thresholdRange(mapNode):
        """``(lowest, highest)`` value of the map inside its foreground: the threshold slider's range."""
        from AnomalyDetectionMRML import threshold_range

        return threshold_range(mapNode)

    @staticmethod
    def detectionReport(mapNode) -> Optional[Dict[str, Any]]:
        """The report the detection left on ``mapNode`` (None for a map this module did not make)."""
        from AnomalyDetectionMRML import detection_report

        return detection_report(mapNode)

    @staticmethod
    def hasForeground(mapNode) -> bool:
        """Whether the map node references the foreground its detection scored (metrics then count inside it)."""
        from AnomalyDetectionMRML import foreground_node

        return foreground_node(mapNode) is not None

    # ------------------------------------------------------------------------ evaluation

    def evaluate(self, mapNode, referenceSegmentationNode, segmentID: str, threshold: float,
                 tableNode=None, plotChartNode=None, mask=None):
        """Metrics table, Dice-vs-threshold chart and metrics dict of ``mapNode`` against one segment.

        Metrics count inside the foreground the map's detection scored (the node reference survives
        saving and reloading the scene), as in the engine's demo and benchmark; ``mask`` gives another
        region (a volume node or image), ``mask=False`` the whole grid.
        """
        self.setupPythonRequirements()
        from AnomalyDetectionMRML import evaluate_nodes

        return evaluate_nodes(mapNode, referenceSegmentationNode, segmentID, float(threshold),
                              table_node=tableNode, plot_chart_node=plotChartNode, mask=mask)

    # ----------------------------------------------------------------- segment editor

    @staticmethod
    def openInSegmentEditor(segmentationNode, mapNode, threshold: float) -> None:
        """Segment Editor on the anomaly segment, the map as source volume, Threshold effect from ``threshold``.

        The user then sees the threshold preview on the map and can paint, erase or apply as usual.
        """
        if segmentationNode is None or mapNode is None:
            raise ValueError("run a detection first")
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.2
        setSource(mapNode)
        segmentID = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
        if segmentID:
            editor.setCurrentSegmentID(segmentID)
        editor.setActiveEffectByName("Threshold")
        effect = editor.activeEffect()
        if effect is not None:
            high = mapNode.GetImageData().GetScalarRange()[1]
            effect.setParameter("MinimumThreshold", str(float(threshold)))
            effect.setParameter("MaximumThreshold", str(float(max(high, threshold))))

    # -------------------------------------------------------------------------- training

    def trainModel(
        self,
        normalFolder: Union[str, Path],
        outputPath: Union[str, Path],
        arch: str = "vae",
        epochs: int = 20,
        useTemplate: bool = True,
        device: str = "auto",
        batchSize: int = 32,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        **trainOptions: Any,
    ):
        """Train a model on the normal scans in ``normalFolder``, save it to ``outputPath`` and list it.

        With ``useTemplate`` every scan is registered to the MNI152 brain template first, as the
        bundled brain models were (and as detection will), so scans in any pose and voxel size can be
        mixed. Thresholds are calibrated on held-out normal scans. ``trainOptions`` go to the engine's
        ``train`` (latent_dim, beta, size, channels, ...). Returns the engine's ``Model``.
        """
        self.setupPythonRequirements()
        from AnomalyDetectionLib import InputError, train
        from AnomalyDetectionLib.preprocessing.io import expand_inputs
        from AnomalyDetectionLib.preprocessing.template import template_entry

        folder = Path(normalFolder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        volumes = [str(p) for p in expand_inputs([str(folder)])]
        if not volumes:
            raise InputError(f"{folder}: no image files or DICOM series found")
        output = Path(outputPath)
        if output.suffix != MODEL_SUFFIX:
            output = output.with_name(output.name + MODEL_SUFFIX)
        model = train(volumes, output, arch=arch, epochs=int(epochs), batch_size=int(batchSize), device=device,
                      template=template_entry() if useTemplate else None, progress=progress, cancel=cancel,
                      **trainOptions)
        self.rememberUserModel(output)
        return model

    # ---------------------------------------------------------------------------- sample

    @staticmethod
    def loadSample():
        """Load the shipped scan and its ground truth (as a segmentation); returns ``(volume, segmentation)``."""
        scan = slicer.util.loadVolume(str(SAMPLE_SCAN))
        scan.SetName(SAMPLE_NAME)
        reference = labelmapFileToSegmentation(SAMPLE_TRUTH, f"{SAMPLE_NAME} truth", scan)
        return scan, reference


def labelmapFileToSegmentation(path: Path, name: str, referenceVolume=None):
    """Import a labelmap file as a segmentation node (one segment per label), as the web app does."""
    from AnomalyDetectionLib.preprocessing.io import read_volume
    from AnomalyDetectionMRML import labelmap_to_segmentation

    return labelmap_to_segmentation(read_volume(path, allow_constant=True), slicer.mrmlScene, name, referenceVolume)


#
# Test
#


class AnomalyDetectionTest(ScriptedLoadableModuleTest):
    """In-Slicer test: bundled model on the shipped sample, on the CPU, through the module's Logic."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_ProcessSampleWithBundledModel()

    def test_ProcessSampleWithBundledModel(self) -> None:
        self.delayDisplay("Loading the sample scan")
        logic = AnomalyDetectionLogic()
        logic.setupPythonRequirements(askConfirmation=False)
        scan, reference = logic.loadSample()

        self.delayDisplay("Detecting anomalies (bundled model, CPU)")
        outputs = logic.process(scan, model=DEFAULT_MODEL, device="cpu", showResult=False)
        mapNode, segmentationNode = outputs.map_node, outputs.segmentation_node
        self.assertEqual(mapNode.GetImageData().GetDimensions(), scan.GetImageData().GetDimensions())
        self.assertTrue(_sameIJKToRAS(mapNode, scan), "the anomaly map is not on the input's grid")

        import numpy as np

        segmentID = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
        self.assertTrue(segmentID)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentID, mapNode)
        self.assertGreater(int(np.count_nonzero(mask)), 0, "the anomaly segmentation is empty")

        self.delayDisplay("Evaluating against the ground truth")
        threshold = float(outputs.report["threshold"])
        tableNode, chartNode, metrics = logic.evaluate(
            mapNode, reference, reference.GetSegmentation().GetNthSegmentID(0), threshold)
        self.assertIsNotNone(tableNode)
        self.assertIsNotNone(chartNode)
        self.assertGreater(metrics["dice"], 0.0)
        self.assertGreater(metrics["voxel_auroc"], 0.5)

        self.delayDisplay("Moving the threshold")
        logic.updateSegmentation(mapNode, threshold * 2.0, segmentationNode)
        smaller = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentID, mapNode)
        self.assertLessEqual(int(np.count_nonzero(smaller)), int(np.count_nonzero(mask)))
        self.delayDisplay("Test passed")


def _sameIJKToRAS(a, b, tolerance: float = 1e-6) -> bool:
    ma, mb = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(ma)
    b.GetIJKToRASMatrix(mb)
    return all(abs(ma.GetElement(r, c) - mb.GetElement(r, c)) <= tolerance * max(1.0, abs(mb.GetElement(r, c)))
               for r in range(4) for c in range(4))
