"""A recurrent classifier: the digits images read row by row (8 steps of 8 features)."""

from __future__ import annotations

from torch import nn


class DigitsLSTM(nn.Module):
    """Two stacked LSTM layers; the last step's hidden state feeds a linear classifier."""

    def __init__(self, hidden: int = 64, layers: int = 2, num_classes: int = 10, features: int = 8) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x):  # x: (batch, steps, features)
        out, _ = self.lstm(x)
        return self.classifier(out[:, -1])


class DigitsGRU(nn.Module):
    """Stacked GRU layers; the last step's hidden state feeds a linear classifier."""

    def __init__(self, hidden: int = 64, layers: int = 1, num_classes: int = 10, features: int = 8) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=layers, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x):  # x: (batch, steps, features)
        out, _ = self.gru(x)
        return self.classifier(out[:, -1])
