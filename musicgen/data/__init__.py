"""Data: sources (``sources``), corpus export (``export``), split, augmentation, token cache,
windows and the DataModule.

``MidiDataModule`` is imported lazily so that ``python -m musicgen.prepare`` does not pay
for importing Lightning and torch.
"""

__all__ = ["MidiDataModule"]


def __getattr__(name: str):
    if name == "MidiDataModule":
        from musicgen.data.datamodule import MidiDataModule

        return MidiDataModule
    raise AttributeError(f"module 'musicgen.data' has no attribute {name!r}")
