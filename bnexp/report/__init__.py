"""Step 6 of the pipeline: run records -> flat rows -> what a person reads.

- stats.py: summaries, seed-paired comparisons, the divergence test and the verdict (scipy.stats);
- rows.py: records -> one flat row per (group, variant), with convergence, norm and reuse;
- table.py: the Rich comparison table that fits the terminal, and a run's record table;
- export.py: Markdown, CSV and strict JSON (NaN and infinities as null), and saving them;
- plots.py: PNG figures (matplotlib, imported on first use).

Everything here reads flat run records (metrics.json); nothing imports TensorFlow.
"""

from .export import dumps, save, strict, to_csv, to_json, to_markdown
from .rows import bn_initial_share, compare_rows, diff, flatten, norm_of, trained_together
from .table import compare_table, record_table

__all__ = ["bn_initial_share", "compare_rows", "compare_table", "diff", "dumps", "flatten", "norm_of",
           "record_table", "save", "strict", "to_csv", "to_json", "to_markdown", "trained_together"]
