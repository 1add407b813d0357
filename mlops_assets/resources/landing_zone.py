"""The landing zone: where source systems drop files, and the quarantine beside it."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobProperties
from pydantic import Field
from upath import UPath

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.resources.storage import StorageAccount, StorageLocation


@dataclass(frozen=True)
class LandingFile:
    """One file in the landing zone.

    ``path`` is relative to the landing root (``<dataset prefix>/<pattern path>``);
    ``etag`` changes whenever the file's content is replaced, so ``(path, etag)``
    names one version of one file. ``event_date`` is the day its path spells (the first
    of the month for a pattern without ``{dd}``); ``partition`` is the start of the
    dataset's partition that holds it.
    """

    path: str
    etag: str
    size: int
    modified: dt.datetime
    event_date: dt.date
    name: str
    partition: dt.date
    subfolder: str = ""

    @property
    def extension(self) -> str:
        """The format's extension, behind a ``.gz`` compression suffix if there is one."""
        name = self.name.lower().removesuffix(".gz")
        return name.rsplit(".", 1)[-1] if "." in name else ""


class LandingZone(dg.ConfigurableResource):
    """Landing zone and quarantine area, on any fsspec filesystem (local folders, Azure Blob)."""

    location: StorageLocation = Field(description="The landing zone: where source systems drop files.")
    quarantine_uri: str = Field(
        description="Where rejected files are kept with their reasons: a local folder, or az://<container>/<prefix> "
        "on the landing zone's storage account."
    )
    poll_days: int | None = Field(
        default=None,
        description="How many most recent days (UTC, today included) the polling sensor lists; "
        "None lists the whole dataset prefix.",
    )

    @property
    def account(self) -> StorageAccount | None:
        """The storage account of a landing zone on Blob; None for a local folder."""
        return self.location.account

    def _root(self) -> UPath:
        return self.location.path()

    def _quarantine(self) -> UPath:
        # A string on the landing zone's account rather than a location resource of its own:
        # Dagster builds every nested resource again for each sensor tick.
        return self.location.resolve(self.quarantine_uri)

    def list_dataset(self, spec: DatasetSpec) -> list[LandingFile]:
        """Every file under the dataset's prefix whose path carries an event day."""
        return self._list(spec, spec.landing.prefix)

    def list_partition(self, spec: DatasetSpec, start: dt.date) -> list[LandingFile]:
        """The files of the partition starting on ``start``; lists only that partition's prefix."""
        pattern = spec.landing.path_pattern
        through = "dd" if spec.grain.name == "daily" else "mm"
        prefix = f"{spec.landing.prefix}/{pattern.prefix(start, through=through)}"
        return [file for file in self._list(spec, prefix) if file.partition == start]

    def candidate_partitions(self, spec: DatasetSpec, today: dt.date) -> list[dt.date] | None:
        """The partitions whose prefixes can hold new files, or None for every partition."""
        if self.poll_days is None:
            return None
        current = spec.grain.floor(today)
        return [spec.grain.shift(current, -back) for back in range(self.poll_days - 1, -1, -1)]

    def list_recent(self, spec: DatasetSpec, today: dt.date) -> list[LandingFile]:
        """What the polling sensor looks at: the candidate partitions' prefixes, or everything."""
        starts = self.candidate_partitions(spec, today)
        if starts is None:
            return self.list_dataset(spec)
        return [file for start in starts for file in self.list_partition(spec, start)]

    def locate(self, spec: DatasetSpec, container: str, blob: str) -> str | None:
        """The landing path of a blob named in a storage event, or None if the blob is not
        a file of this dataset (another container or prefix, or a name the pattern refuses)."""
        root = self._root()
        root_container, _, root_prefix = root.path.strip("/").partition("/")
        if container != root_container:
            return None
        if root_prefix and not blob.startswith(f"{root_prefix}/"):
            return None
        path = blob.removeprefix(f"{root_prefix}/") if root_prefix else blob
        dataset_prefix = f"{spec.landing.prefix}/"
        if not path.startswith(dataset_prefix):
            return None
        matched = spec.landing.path_pattern.match(path[len(dataset_prefix) :])
        if matched is None or _is_hidden(matched.subfolder + matched.name):
            return None
        return path

    def stat(self, spec: DatasetSpec, path: str) -> LandingFile | None:
        """The current version of one landing file, or None if it no longer exists."""
        if self.account is not None:
            container, blob = self.blob_name(path)
            with self.account.container(container) as client:
                try:
                    properties = client.get_blob_client(blob).get_blob_properties()
                except ResourceNotFoundError:
                    return None
            return _landing_file(spec, path, _blob_info(properties))
        target = self._root() / path
        try:
            info = target.fs.info(target.path)
        except FileNotFoundError:
            return None
        return _landing_file(spec, path, info)

    def blob_name(self, path: str) -> tuple[str, str]:
        """The container and blob name of a landing path on Blob."""
        container, _, prefix = self._root().path.strip("/").partition("/")
        return container, f"{prefix}/{path}" if prefix else path

    def _list(self, spec: DatasetSpec, prefix: str) -> list[LandingFile]:
        if self.account is not None:
            # Sensors list on every tick: the Blob client with few retries fails fast.
            container, blob_prefix = self.blob_name(prefix)
            strip = len(blob_prefix) - len(prefix)
            with self.account.container(container) as client:
                listed = [
                    _landing_file(spec, blob.name[strip:], _blob_info(blob))
                    for blob in client.list_blobs(name_starts_with=blob_prefix)
                ]
            return sorted((file for file in listed if file is not None), key=lambda f: f.path)
        root = self._root()
        folder_part, _, _ = prefix.rpartition("/")
        folder = root / folder_part if folder_part else root
        if not folder.exists():
            return []
        base = root.path.rstrip("/") + "/"
        files = []
        for full_path, info in folder.fs.find(folder.path, detail=True).items():
            if info.get("type") != "file":
                continue
            relative = full_path[len(base) :] if full_path.startswith(base) else full_path
            if not relative.startswith(prefix):
                continue
            file = _landing_file(spec, relative, info)
            if file is not None:
                files.append(file)
        return sorted(files, key=lambda file: file.path)

    def read_bytes(self, file: LandingFile) -> bytes:
        return (self._root() / file.path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Drop a file into the landing zone, as a source system would: written under a
        hidden name and renamed, so a sensor never lists half a file."""
        self.location.write_bytes(self._root() / path, data)

    def quarantine(self, file: LandingFile, data: bytes, reason: dict[str, Any]) -> str:
        """Keep a rejected file version in quarantine with its reason, and take it out of
        the landing zone; returns the quarantined copy's URI.

        Each version is kept under its etag (``<folder>/<etag>/<name>``), so rejecting the
        same path again never overwrites an earlier rejection. ``data`` is the version that
        was parsed; the landing file is removed only if it is still that version, so a
        newer upload under the same name waits for its own turn. The reason sidecar
        ``<name>.reason.json`` is written last: a crash before it leaves the landing file
        in place to be tried again.
        """
        folder, _, name = file.path.rpartition("/")
        target = self._quarantine() / folder / _safe_segment(file.etag) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        sidecar = target.with_name(f"{name}.reason.json")
        sidecar.write_text(json.dumps(reason, indent=2, default=str))
        self._delete_version(file)
        return str(target)

    def _delete_version(self, file: LandingFile) -> None:
        """Delete ``file`` from the landing zone only if it is still that version."""
        if self.account is not None:
            container, blob = self.blob_name(file.path)
            with self.account.container(container) as client:
                try:
                    client.get_blob_client(blob).delete_blob(
                        etag=file.etag, match_condition=MatchConditions.IfNotModified
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    return
            return
        source = self._root() / file.path
        if source.exists() and _etag(source.fs.info(source.path)) == file.etag:
            source.unlink()

    def replay(self, entry: dict[str, Any]) -> bool:
        """Put one quarantined file version back in the landing zone under its own path, where the
        arrival sensors find it as a new version, and drop it (and its reason) from quarantine.
        Returns False, changing nothing, when a file already lands under that path (a newer
        upload, which wins)."""
        target = self._root() / entry["path"]
        if target.exists():
            return False
        copy = self.location.resolve(entry["quarantined_to"])
        self.write_bytes(entry["path"], copy.read_bytes())
        copy.with_name(f"{copy.name}.reason.json").unlink()
        copy.unlink()
        return True

    def quarantined(self, spec: DatasetSpec) -> list[dict[str, Any]]:
        """The reasons of every file of the dataset held in quarantine."""
        folder = self._quarantine() / spec.landing.prefix
        if not folder.exists():
            return []
        sidecars = sorted(path for path in folder.fs.find(folder.path) if path.endswith(".reason.json"))
        return [
            {
                **json.loads(folder.fs.cat_file(path)),
                "quarantined_to": folder.fs.unstrip_protocol(path[: -len(".reason.json")]),
            }
            for path in sidecars
        ]


def _blob_info(blob: BlobProperties) -> dict[str, Any]:
    """A Blob listing entry in the shape of an fsspec ``info`` dict."""
    return {"type": "file", "etag": blob.etag, "size": blob.size, "last_modified": blob.last_modified}


def _is_hidden(name: str) -> bool:
    """Hidden and underscore names are files still being written, or markers, and so is
    everything in a hidden or underscore folder (``_temporary/`` of a Spark writer)."""
    return any(segment.startswith((".", "_")) for segment in name.split("/"))


def _landing_file(spec: DatasetSpec, path: str, info: dict[str, Any]) -> LandingFile | None:
    """The landing file at ``path`` (relative to the root) from its storage listing entry, or
    None if it is not a file whose path the dataset's pattern accepts, or a hidden one."""
    matched = spec.landing.path_pattern.match(path[len(spec.landing.prefix) + 1 :])
    if matched is None or info.get("type") != "file" or _is_hidden(matched.subfolder + matched.name):
        return None
    return LandingFile(
        path=path,
        etag=_etag(info),
        size=int(info.get("size") or 0),
        modified=_modified(info),
        event_date=matched.event_date,
        name=matched.name,
        partition=spec.grain.floor(matched.event_date),
        subfolder=matched.subfolder,
    )


def _safe_segment(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in text)


def _etag(info: dict[str, Any]) -> str:
    if info.get("etag"):
        return str(info["etag"]).strip('"')
    # Local files have no etag. Modification time and size can be kept by a rewrite
    # (`cp -p`, `rsync -t`); the inode change time cannot be set by any tool and moves on
    # every write, rename and replacement.
    changed = info.get("created", info["mtime"])
    return f"{int(float(info['mtime']) * 1e9):x}-{int(info['size']):x}-{int(float(changed) * 1e9):x}"


def _modified(info: dict[str, Any]) -> dt.datetime:
    for key in ("last_modified", "mtime", "LastModified"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    raise ValueError(f"the storage listing gave no modification time for {info.get('name')!r}")
