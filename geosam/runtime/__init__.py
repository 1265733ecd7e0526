"""The torch-free inference core (numpy, Pillow, onnxruntime): shared by CLI and QGIS plugin."""
