"""Asking how to read a file (a raw binary that carries no description of itself, or which stream of
several), and where to save."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QMessageBox,
    QSpinBox,
)

from engine.io.recording import SUPPORTED_DTYPES


class RawParametersDialog(QDialog):
    """Sampling rate, channel count and sample type of a headerless file.

    Only the parameters in `missing` are asked for (a .npy file knows its
    channels and dtype, but not its sampling rate).
    """

    def __init__(self, file_name: str, missing: list[str], parent=None, streams: list[tuple[str, str]] = ()) -> None:
        """`streams`: (name, what it holds) to choose from when "stream" is missing."""
        super().__init__(parent)
        self.setWindowTitle("How is this file stored?")
        self.setObjectName("raw_parameters_dialog")
        layout = QFormLayout(self)
        if missing == ["stream"]:
            layout.addRow(QLabel(f"{file_name} holds several streams: choose the one to sort."))
        else:
            layout.addRow(QLabel(f"{file_name} has no sidecar (.json) or params.py saying how to read it."))
        self.sampling_rate = QDoubleSpinBox(decimals=1, minimum=100.0, maximum=1_000_000.0, value=30_000.0, suffix=" Hz")
        self.n_channels = QSpinBox(minimum=1, maximum=4096, value=1)
        self.dtype = QComboBox()
        self.dtype.addItems(SUPPORTED_DTYPES)
        self.stream = QComboBox()
        for name, holds in streams:
            self.stream.addItem(f"{name} ({holds})", name)
        self._fields = {"sampling_rate": self.sampling_rate, "n_channels": self.n_channels, "dtype": self.dtype,
                        "stream": self.stream}
        labels = {"sampling_rate": "Sampling rate", "n_channels": "Channels", "dtype": "Sample type", "stream": "Stream"}
        for name in missing:
            layout.addRow(labels[name], self._fields[name])
        self._missing = list(missing)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)

    def values(self) -> dict:
        """The parameters asked for, as open_recording keyword arguments."""
        read = {
            "sampling_rate": lambda: float(self.sampling_rate.value()),
            "n_channels": lambda: int(self.n_channels.value()),
            "dtype": lambda: self.dtype.currentText(),
            "stream": lambda: self.stream.currentData(),
        }
        return {name: read[name]() for name in self._missing}


class SaveFolderDialog(QFileDialog):
    """Choose the folder to save into; a name that does not exist yet is created.

    Qt's own folder chooser refuses a folder that does not exist ("Directory
    not found"), yet saving into a new folder is the usual case. Qt's dialog,
    not the platform's, so that this works (and is tested) the same everywhere.
    """

    def __init__(self, parent=None, caption: str = "Save into a folder") -> None:
        super().__init__(parent, caption)
        self.setObjectName("save_folder_dialog")
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.setFileMode(QFileDialog.FileMode.Directory)
        self.setOption(QFileDialog.Option.ShowDirsOnly, True)
        self.setLabelText(QFileDialog.DialogLabel.Accept, "Save here")

    def accept(self) -> None:
        chosen = self.selectedFiles()
        if chosen and not Path(chosen[0]).exists():
            try:
                Path(chosen[0]).mkdir(parents=True)
            except OSError as error:
                QMessageBox.warning(self, self.windowTitle(), f"Could not create {chosen[0]}: {error.strerror or error}")
                return
        super().accept()
