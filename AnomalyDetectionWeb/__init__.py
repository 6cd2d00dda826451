"""The teaching web app: the Slicer module's scene in a browser, on Kitware's trame-slicer.

Depends on the engine (``AnomalyDetectionLib``) and the Slicer module's MRML layer
(``AnomalyDetectionMRML``), never the reverse. ``anomaly-detection web`` starts it
(:mod:`.cli`); :mod:`.launcher` gives each student a server process of their own; :mod:`.app` is
the page; :mod:`.session` the scene logic it drives. Importing this package imports nothing heavy.
"""
