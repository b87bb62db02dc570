"""`hf:ORG/NAME?split=test&question=..&answer=..&kind=..&config=..` via Hugging Face `datasets`.

Optional: the library is imported only here, and only when such a spec is used.
"""

from __future__ import annotations

from ..errors import DataError
from .records import FieldMap, collect


def load_hf(name: str, params: dict[str, str], fm: FieldMap, *, limit: int | None, skip_bad: bool):
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(
            f"hf:{name} needs the Hugging Face 'datasets' library, which is not installed "
            "(pip install -e \".[eval]\"). Offline, use a local file instead: --data-dir DIR with "
            "gsm8k/math500/aime24, or jsonl:PATH?question=..&answer=.."
        ) from None
    split = params.get("split", "test")
    config = params.get("config") or None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, unknown repo/split/config: all user-fixable
        raise DataError(
            f"cannot load hf:{name} (config={config}, split={split}): {type(exc).__name__}: {exc}. "
            "The hub must be reachable (or the dataset cached); offline, use --data-dir / LEANTHINK_DATA_DIR "
            "or a jsonl: spec"
        ) from exc

    def rows():
        for i, row in enumerate(ds):
            yield i, dict(row)

    where = f"hf:{name}[{split}]"  # errors read hf:ORG/NAME[test]:ROW: reason
    items, skipped = collect(rows(), fm, where=where, limit=limit, skip_bad=skip_bad)
    source = f"hf:{name}" + (f" config={config}" if config else "") + f" split={split}"
    return items, skipped, source
