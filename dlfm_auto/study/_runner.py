"""Former home of the study runner, now split by job; names re-exported for code in flight.

New code imports from the job modules: :mod:`._create` (create/resume, spec, load_study),
:mod:`._worker` (the worker loop), :mod:`._processes` (local worker processes),
:mod:`._progress` (counts, progress bar, summary).
"""

from dlfm_auto.study._create import (  # noqa: F401
    build_spec,
    create_or_resume,
    default_study_name,
    load_spec,
    load_study,
    make_pruner,
    make_sampler,
)
from dlfm_auto.study._objective import grid_points  # noqa: F401
from dlfm_auto.study._processes import run_workers  # noqa: F401
from dlfm_auto.study._progress import (  # noqa: F401
    ProgressPoller,
    finished_count,
    study_summary,
)
from dlfm_auto.study._worker import WorkerOptions, WorkResult, failure_line, work  # noqa: F401
