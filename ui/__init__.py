"""Qt viewer (PyQt6 + pyqtgraph). It only consumes engine outputs."""
