"""midog-viewer: review mitotic-figure detections in whole-slide images, as a napari plugin.

The core (``io`` → ``detect`` → ``review`` → ``train``/``evaluate``) imports neither Qt nor napari;
the widgets in ``_qt`` and the CLI in ``cli`` are thin skins over it.
"""

__version__ = "0.1.0"
