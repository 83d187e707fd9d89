"""The result store: run directories of Parquet parts written as rows are measured (``runs``), the
journals behind them (``journal``), files written all or nothing (``atomic``), the interleaved
confirmations of findings (``confirmations``), the partitioned dataset at any fsspec URL (``dataset``),
pytest-benchmark JSON read as rows (``pytest_bench``) and the upgrade of older files (``upgrade``).
Nothing here imports torch."""

from harness.record.run import MAX_RUN_ID, SAFE_NAME, safe_name, shard_label
from harness.store.atomic import COMMIT_DELAY_ENV, atomic_write_bytes
from harness.store.runs import (
    Loaded,
    RefusedFile,
    RunWriter,
    StoreError,
    from_pytest_benchmark,
    load_results,
    load_runs,
    new_run_dir,
    read_journal,
    read_metadata,
    read_run_meta,
    run_path,
    validate_table,
    write_parquet,
)

__all__ = ["COMMIT_DELAY_ENV", "MAX_RUN_ID", "SAFE_NAME", "Loaded", "RefusedFile", "RunWriter", "StoreError",
           "atomic_write_bytes", "from_pytest_benchmark", "load_results", "load_runs", "new_run_dir", "read_journal",
           "read_metadata", "read_run_meta", "run_path", "safe_name", "shard_label", "validate_table", "write_parquet"]
