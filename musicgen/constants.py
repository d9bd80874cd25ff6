"""Values every part of musicgen agrees on. Standard library only: anything may import it.

Every tokeniser reserves ids 0..3 for the special tokens below, so data, models, metrics and
generation can rely on them without knowing which tokeniser is in use.
"""

PAD_ID = 0  # padding: fills inputs past the end of a document and rows of a batch; never a target
BOS_ID = 1  # start of a document: opens every cached document and is the default prompt
EOS_ID = 2  # end of a document: closes every cached document; generation stops on it
UNK_ID = 3  # a token the tokeniser cannot represent (e.g. a pitch outside its range)
IGNORE_INDEX = -100  # target value the loss and the metrics skip (padded targets); torch's default

__all__ = ["PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "IGNORE_INDEX"]
MIDI_SUFFIXES = (".mid", ".midi")  # file names read as MIDI (case-insensitive)
