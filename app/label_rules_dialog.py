"""The rules that suggest labels (engine.curation.labels), one row each, for the person to read and change."""

from __future__ import annotations

from dataclasses import replace

from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from engine.curation.labels import DEFAULT_RULES, LabelRule

BOUND_TEXT = {"min": "at least", "max": "at most"}


class LabelRulesDialog(QDialog):
    """A unit must have each enabled metric within its bound, or it is suggested the rule's label."""

    def __init__(self, rules: tuple[LabelRule, ...], parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("label_rules_dialog")
        self.setWindowTitle("Suggested label rules")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(
            "A unit breaking an enabled rule is suggested that rule's label (noise wins over mua);\n"
            "one breaking none is suggested good. Defaults: bombcell's quality thresholds.",
        ))
        self.grid = QGridLayout()
        layout.addLayout(self.grid)
        for column, text in enumerate(("Use", "Metric", "must be", "Threshold", "else")):
            self.grid.addWidget(QLabel(f"<b>{text}</b>"), 0, column)
        self.rows: list[tuple[LabelRule, QCheckBox, QDoubleSpinBox, QComboBox]] = []
        self._show(rules)
        defaults = QPushButton("Bombcell defaults")
        defaults.clicked.connect(lambda: self._show(DEFAULT_RULES))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton(defaults, QDialogButtonBox.ButtonRole.ResetRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _show(self, rules) -> None:
        while self.grid.count() > 5:  # everything but the header row
            item = self.grid.takeAt(5)
            item.widget().deleteLater()
        self.rows = []
        for row, rule in enumerate(rules, start=1):
            enabled = QCheckBox(checked=rule.enabled)
            threshold = QDoubleSpinBox(decimals=3, minimum=-1e9, maximum=1e9, value=float(rule.threshold))
            label = QComboBox()
            label.addItems(["mua", "noise"])
            label.setCurrentText(rule.label)
            self.grid.addWidget(enabled, row, 0)
            self.grid.addWidget(QLabel(rule.metric), row, 1)
            self.grid.addWidget(QLabel(BOUND_TEXT[rule.bound]), row, 2)
            self.grid.addWidget(threshold, row, 3)
            self.grid.addWidget(label, row, 4)
            self.rows.append((rule, enabled, threshold, label))

    def rules(self) -> tuple[LabelRule, ...]:
        return tuple(
            replace(rule, enabled=enabled.isChecked(), threshold=threshold.value(), label=label.currentText())
            for rule, enabled, threshold, label in self.rows
        )
