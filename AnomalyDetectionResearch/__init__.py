"""AnomalyDetection research: the lesion benchmark, synthetic subjects and lesions, the papers' experiments.

Built on the engine (``AnomalyDetectionLib``) and never imported by it: a Slicer user installs the
engine and the module, not this. Every map made here comes from the engine's one
:class:`~AnomalyDetectionLib.pipeline.Detector`, so the benchmark measures the tool as shipped.
Its command-line verbs (``anomaly-detection benchmark``, ``experiment``) join the engine's
command line through an entry point (:mod:`AnomalyDetectionResearch.cli`).
"""
