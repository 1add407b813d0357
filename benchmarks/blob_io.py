"""blob_io: the project's Blob layer writing and reading a 256 MB object on Azurite, against raw
azure-storage-blob uploads and downloads tuned with max_concurrency (8 was the fastest of 2, 4,
8 and 16 for raw transfers here).

Both run in this process against one Azurite on free ports with its data in a temporary
folder. The project side is a training state's full path through the training-state store
(a storage location on Blob): pickling, blocks staged in parallel while the bytes are
hashed, the block list committed with the sha256 as metadata, listing the saved states,
the SDK's parallel download, checking the sha256, unpickling. The raw side
uploads and downloads the same bytes with the SDK's defaults.

    python benchmarks/blob_io.py [--megabytes 256] [--repeats 5]

Prints, as its last line, the result (benchmarks/report.py): min, median and max of both
sides and ratio = raw median / project median, the project's share of raw throughput
(target >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
from azure.storage.blob import BlobServiceClient
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource
from report import machine, report, spread

from mlops_assets.resources.storage import BLOB_CONCURRENCY, StorageAccount, StorageLocation
from mlops_assets.resources.training_states import TrainingStateStore
from mlops_dev.services import AZURITE_KEY, run_azurite

RAW_CONCURRENCY = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = machine()
    payload = os.urandom(args.megabytes * 1024 * 1024)
    project_seconds, raw_seconds = [], []
    with tempfile.TemporaryDirectory() as folder, run_azurite(Path(folder) / "azurite") as endpoints:
        account = StorageAccount(
            blob=AzureBlobStorageResource(
                account_url=endpoints.blob_url, credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY)
            )
        )
        store = TrainingStateStore(location=StorageLocation(uri="az://models/training-states", account=account))
        key = dg.AssetKey(["models", "blob_io"])
        raw = BlobServiceClient.from_connection_string(endpoints.connection_string).get_blob_client(
            "models", "raw/blob_io"
        )
        for repeat in range(args.repeats):
            started = time.perf_counter()
            with store.training(key, "2026-01-01", f"repeat-{repeat}") as states:
                states.save(1, payload)
                states.flush()
                loaded = states.newest_intact()
                project_seconds.append(time.perf_counter() - started)
                states.discard()
            if loaded is None or loaded.state != payload:
                raise RuntimeError("the training-state store returned other bytes than it stored")

            started = time.perf_counter()
            raw.upload_blob(payload, overwrite=True, max_concurrency=RAW_CONCURRENCY)
            echoed = raw.download_blob(max_concurrency=RAW_CONCURRENCY).readall()
            raw_seconds.append(time.perf_counter() - started)
            if echoed != payload:
                raise RuntimeError("raw download returned other bytes than were uploaded")
            print(f"repeat {repeat + 1}: project {project_seconds[-1]:.2f} s, raw {raw_seconds[-1]:.2f} s", flush=True)
    project, raw = spread(project_seconds), spread(raw_seconds)
    ratio = raw["median"] / project["median"]
    moved = 2 * args.megabytes
    report(
        "blob_io",
        project=project,
        baseline=raw,
        unit="s",
        ratio=ratio,
        target="raw median / project median >= 0.95",
        met=ratio >= 0.95,
        machine=before,
        megabytes=args.megabytes,
        project_mb_per_s=round(moved / project["median"], 1),
        raw_mb_per_s=round(moved / raw["median"], 1),
        concurrency={"project": BLOB_CONCURRENCY, "raw": RAW_CONCURRENCY},
    )


if __name__ == "__main__":
    main()
