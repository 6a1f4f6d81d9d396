"""The study application: configurations, sweeps, the results database, the report and the ``pyred`` command.

Modules, in the order data flows through them:
  schema       a study's settings as typed objects (models, datasets, the configuration, its pairs)
  config       reading a configuration (TOML, the default, command-line overrides)
  validate     checking a whole configuration before any work starts
  identity     what changes a configuration's numbers, and its id
  npz          precomputed features files, checked whole
  methods      subset methods (random, first, pca, pca-bottom, randproj, randproj-uniform)
  views        what a probe reads: the layer, or its PCA / random-projection coordinates
  data         the features of one (model, dataset), extracted or loaded
  plan         units of work and their keys; result rows
  execute      running one unit (CKA or a chunk of probe heads)
  distributed  torch.distributed: ranks and collectives
  lock, spool  one run per folder; finished units of other ranks on their way to the database
  store        results.sqlite: configurations, runs, units, rows
  runner       ``run(cfg)``: everything above, in order
  aggregate    the measures (DR, seed statistics, disparity) from one configuration's rows
  report       analysis.json, plots and report.md, from the database
  cli          the ``pyred`` command; paper_cli its ``pyred paper list | show | run``
"""

from .config import load_config
from .errors import ConfigError, StudyError
from .identity import ConfigIdentity, config_id, identity
from .report import analyse_folder, write_report
from .runner import run
from .schema import DatasetSpec, ModelSpec, StudyConfig, default_config
from .store import ResultStore

__all__ = ["ConfigError", "ConfigIdentity", "DatasetSpec", "ModelSpec", "ResultStore", "StudyConfig", "StudyError",
           "analyse_folder", "config_id", "default_config", "identity", "load_config", "run", "write_report"]
