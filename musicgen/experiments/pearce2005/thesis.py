"""The thesis's published figures (M. T. Pearce 2005: the datasets of Table 4.1, the bits per note
of Tables 6.6, 7.3 and 9.8, the models' names) and the words the benchmark's rows are labelled
with (what each row may see: the report's first column)."""

from __future__ import annotations

#: Thesis Table 4.1: melodies, events (notes), distinct pitches.
THESIS_DATA = {"chorales": (185, 9227, 21), "kinder": (213, 8393, 27), "fink": (566, 33087, 37)}
#: Thesis Table 6.6 (and 7.3): bits per note, (chorales, kinder).
PUBLISHED = (
    ("short-term model only (learns online from the test melody)", 3.139, 2.693),
    ("long-term model (training folds only)", 2.444, 2.428),
    ("long-term model, also updated online with the test melody", 2.375, 2.237),
    ("long- and short-term combined (bias 2)", 2.347, 2.106),
    ("multiple-viewpoint system, features searched on this data (Table 7.3)", 1.953, None),
    ("multiple-viewpoint system, extended feature set with mode (Table 9.8)", 1.911, None),
)
#: The Table 6.6 rows the PPM* reproduction answers: key in the result -> (label, chorales, kinder).
TABLE_6_6 = dict(zip(("stm", "ltm", "ltm_plus", "combined"), PUBLISHED[:4]))
#: The reproduced models' names in the thesis's notation (§6.3.1).
PPM_NAMES = {"stm": "STM C*I", "ltm": "LTM C*I", "ltm_plus": "LTM+ C*I", "combined": "LTM+ C*I with STM C*I",
             "stm_extra": "STM {}", "combined_extra": "LTM+ C*I with STM {}"}
FOLD_ONLY = "training folds only"  # the rows trained on the training folds alone (Table 6.6's LTM's peers)


PRETRAINING = "pre-training"
LEARNS = "learns from the test melody"
#: What each kind of row may see (the report's first column).
SEES = {"fold": FOLD_ONLY, "dynamic": f"training folds; {LEARNS}", "pre": f"training folds; {PRETRAINING}",
        "pre_dynamic": f"training folds; {PRETRAINING}; {LEARNS}"}
DYNAMIC = "dynamic evaluation"
STM = "PPM* STM"


#: What each of the thesis's rows may see (the report's first column), in ``PUBLISHED``'s order.
THESIS_SEES = ("learns from the test melody", FOLD_ONLY, "training folds; learns from the test melody",
               "training folds; learns from the test melody",
               "training folds; rhythm of earlier notes; rhythm of the current note",
               "training folds; rhythm of earlier notes; rhythm of the current note; key signature and mode")
