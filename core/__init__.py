"""Framework-free code shared by the API and the worker: settings, database, storage, job spec."""
